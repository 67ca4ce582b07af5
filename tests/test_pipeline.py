"""The whole method end to end with the tiny budget: pipeline (multi-view pooling of Organ Attention
and TANQ translations, with the ablation stages: the source-only baseline and ASIT's Sobel-space
stage), review, self-training round, final predictions, evaluation. Real translators, real nnU-Net."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import Planted

from napari_uda.core.io import read_volume
from napari_uda.core.workspace import Workspace
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.review.store import ReviewStore, file_hash, label_hash

pytestmark = pytest.mark.slow
STAGES = ["no_adaptation", "asit", "pooled"]
CTS = ["ct_000", "ct_001", "ct_002"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_uda.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    write_phantom_dataset(root / "data", {"ct": 3, "t2wi": 3}, seed=11, shape=(24, 48, 48))
    ws = root / "ws"
    args = ["pipeline", "--source-images", str(root / "data/ct/images"), "--source-labels", str(root / "data/ct/labels"),
            "--target-images", str(root / "data/t2wi/images"), "--modality", "T2WI", "--workspace", str(ws),
            "--budget", "tiny", "--pool-variants", "organ-attention,tanq", "--ablation", "--ablation-variants", "asit",
            "--device", "cpu", "--eval-labels", str(root / "data/t2wi/labels")]
    first = cli(*args)
    return {"root": root, "ws": ws, "args": args, "first": first}


def test_pipeline_stops_for_review_with_every_stage_predicted(run):
    first, ws = run["first"], run["ws"]
    assert first.returncode == 3, first.stderr[-2000:]
    assert "await review" in first.stderr
    targets = sorted((run["root"] / "data/t2wi/images").iterdir())
    for stage in STAGES:
        folder = ws / "predictions" / stage
        for t in targets:
            fused, image = read_volume(folder / t.name), read_volume(t)
            assert fused.shape == image.shape and fused.geometry.matches(image.geometry)
            assert (folder / "fold_0" / t.name).exists() and (folder / "fold_1" / t.name).exists()
        assert len(json.loads((folder / "predictions.json").read_text())) == 3
    for variant in ("asit", "organ-attention", "tanq"):
        assert (ws / "translators" / variant / "translator.safetensors").exists()
        assert len(list((ws / "translated" / variant).glob("*.nii.gz"))) == 3
    assert len(list((ws / "translated" / "organ-attention_attention").glob("*.nii.gz"))) == 3
    manifest = Workspace.open(ws).manifest
    assert manifest["stages"]["pooled"]["status"] == "done"  # scored: the queue is filled
    assert "organ_attention" not in manifest["models"] and "tanq" not in manifest["models"]  # pooled, not alone
    # the source-only baseline sees CT normalised as the targets are; every segmenter gets strong intensity augmentation
    assert manifest["models"]["no_adaptation"]["channel"] == "T2WI" and manifest["models"]["asit"]["channel"] == "T2WI"
    assert manifest["models"]["no_adaptation"]["budget"] == "tiny-aug" and manifest["models"]["asit"]["budget"] == "tiny-aug"
    assert manifest["pipeline"]["ablation_variants"] == ["asit"] and not (ws / "translators" / "cyclegan").exists()
    assert manifest["pipeline"]["pool_variants"] == ["organ-attention", "tanq"]
    queue = json.loads(cli("review", "queue", "--workspace", str(ws), "--json").stdout)
    assert len(queue) == 3 and all(q["state"] == "not reviewed" and len(q["filters"]) == 3 for q in queue)
    assert all(0 <= q["case_score"] <= 1 and len(q["organ_consistency"]) == 13 for q in queue)
    for q in queue:  # the panel's per-organ figures average to the case score (absent organs are 0, not 1)
        assert np.mean(list(q["organ_consistency"].values())) == pytest.approx(q["case_score"])


def test_the_asit_stage_trains_and_predicts_in_sobel_space(run):
    """ASIT's segmenter trains on its Sobel-space translations alone (no real CT: it is not in that
    space) and predicts the targets' Sobel maps, which are the targets' own (``sobel_volume``) with
    their geometry; its predictions are on the targets' grid like every stage's."""
    from napari_uda.translate.translator import load_translator, sobel_volume

    ws = run["ws"]
    raw = ws / "nnunet/raw/Dataset104_UDA_asit/imagesTr"
    assert sorted(p.name for p in raw.iterdir()) == [f"ct_00{i}_0000.nii.gz" for i in range(3)]
    for p in raw.iterdir():
        a = read_volume(p).array
        assert -1.0 - 1e-4 <= a.min() < a.max() <= 1.0 + 1e-4
    spacing = load_translator(ws / "translators" / "asit").config.spacing_mm
    records = json.loads((ws / "predictions" / "asit" / "predictions.json").read_text())
    for t, record in zip(sorted((run["root"] / "data/t2wi/images").iterdir()), records):
        assert record["input"] == str(ws / "sobel" / t.name)
        stored, image = read_volume(ws / "sobel" / t.name), read_volume(t, "T2WI")
        assert stored.geometry.matches(image.geometry)
        np.testing.assert_allclose(stored.array, sobel_volume(image, "T2WI", spacing).array, atol=1e-6)


def test_the_pooled_stage_trains_on_both_translators_and_tanq_translates_by_the_ct_labels(run):
    """Multi-view pooling: one nnU-Net dataset holds every CT translated by Organ Attention and by
    TANQ (+ the real CT), each with the CT's labels; TANQ's translations are its generator's with
    the CT's own organ map as regions (not those its segmentation decoder would give)."""
    from napari_uda.translate.translator import load_translator, translate_volume

    ws, data = run["ws"], run["root"] / "data"
    raw = ws / "nnunet/raw/Dataset106_UDA_pooled"
    names = [f"{v}_{c}" for v in ("organ_attention", "tanq", "real") for c in CTS]
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == sorted(f"{n}_0000.nii.gz" for n in names)
    for c in CTS:
        labels = {v: read_volume(raw / "labelsTr" / f"{v}_{c}.nii.gz").array for v in ("organ_attention", "tanq", "real")}
        np.testing.assert_array_equal(labels["tanq"], labels["organ_attention"])
        np.testing.assert_array_equal(labels["tanq"], read_volume(data / "ct/labels" / f"{c}.nii.gz").array)
    tanq = load_translator(ws / "translators" / "tanq")
    ct, organs = read_volume(data / "ct/images/ct_000.nii.gz", "CT"), read_volume(data / "ct/labels/ct_000.nii.gz")
    stored = read_volume(ws / "translated" / "tanq" / "ct_000.nii.gz").array
    by_labels, by_decoder = (translate_volume(tanq, ct, labels=lab)[0].array for lab in (organs, None))
    np.testing.assert_allclose(stored, by_labels, rtol=1e-5, atol=1e-3)
    assert np.abs(stored - by_decoder).max() > 1e-2


def test_review_then_self_training_round_and_final(run):
    ws, queue = run["ws"], json.loads(cli("review", "queue", "--workspace", str(run["ws"]), "--json").stdout)
    accepted, edited, rejected = (q["case"] for q in queue)
    assert cli("review", "decide", "--workspace", str(ws), "--case", accepted, "--accept", "--reviewer", "ana").returncode == 0
    label = read_volume(queue[1]["label"])
    label.array[label.array == 5] = 0  # the reviewer removes the aorta
    edited_path = run["root"] / "edited.nii.gz"
    from napari_uda.core.io import write_volume
    write_volume(label, edited_path)
    out = cli("review", "decide", "--workspace", str(ws), "--case", edited, "--accept", "--label", str(edited_path),
              "--reviewer", "ben", "--note", "aorta was a false positive")
    assert out.returncode == 0, out.stderr
    assert cli("review", "decide", "--workspace", str(ws), "--case", rejected, "--reject", "--reviewer", "ana").returncode == 0

    second = cli(*run["args"])  # the same command continues: self-training round 1, final, evaluation
    assert second.returncode == 0, second.stderr[-3000:]
    final = ws / "predictions" / "final"
    for t in sorted((run["root"] / "data/t2wi/images").iterdir()):
        assert read_volume(final / t.name).geometry.matches(read_volume(t).geometry)
    # the round's dataset: both pooled translations + real CT (RCT+FI) + exactly the accepted cases, the edited label
    raw = ws / "nnunet/raw/Dataset111_UDA_self_training_r1"
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == sorted(
        [f"{v}_{c}.nii.gz" for v in ("organ_attention", "tanq", "real") for c in CTS]
        + [f"{accepted}.nii.gz", f"{edited}.nii.gz"])
    assert file_hash(raw / "imagesTr" / "real_ct_000_0000.nii.gz") != file_hash(raw / "imagesTr" / "tanq_ct_000_0000.nii.gz")
    assert label_hash(read_volume(raw / "labelsTr" / f"{edited}.nii.gz").array) == label_hash(label.array)
    assert file_hash(raw / "imagesTr" / f"{accepted}_0000.nii.gz")
    with ReviewStore.for_workspace(ws) as store:
        (r1,) = store.rounds()
        assert r1.cases == sorted([accepted, edited]) and r1.settings["budget"] == "tiny"
        assert set(r1.uncertainty) == {q["case"] for q in queue}
        assert all(u >= 0 for u in r1.uncertainty.values())  # inf where round 1 predicts no foreground
        model = store.db.execute("SELECT name, round FROM models WHERE id = ?", (r1.model_id,)).fetchone()
        assert model[1] == 1 and model[0].endswith("self_training_r1")
        new_queue = store.queue("T2WI")  # refilled from the second-round model
        assert all(q.label.endswith(f"self_training_r1/pseudo/{q.case}.nii.gz") for q in new_queue)
    manifest = Workspace.open(ws).manifest
    assert manifest["rounds"][0]["accepted"] == 2 and manifest["stages"]["final"]["from_stage"] == "self_training_r1"
    # by default round 1 fine-tunes the pooled stage's folds
    r1_model = manifest["models"]["self_training_r1"]
    assert r1_model["budget"] == "tiny-aug-ft" and r1_model["fine_tuned_from"] == manifest["models"]["pooled"]["path"]
    # the evaluation of every stage: valid numbers
    for stage in [*STAGES, "self_training_r1", "final"]:
        report = json.loads((ws / "reports" / f"evaluation_{stage}.json").read_text())
        assert report["n_cases"] == 3 and not report["missing"]
        for organ in report["summary"].values():
            assert all(0.0 <= v <= 1.0 for v in organ.values())
    assert "| organ (DSC mean) | no_adaptation | asit | pooled | self_training_r1 | final |" in second.stdout

    third = cli(*run["args"])  # everything is done: nothing is trained again
    assert third.returncode == 0 and "fold 0 epoch" not in third.stderr


def test_selftrain_needs_a_pipeline_and_decisions(run, tmp_path):
    out = cli("selftrain", "--workspace", str(tmp_path), "--rounds", "1", "--budget", "tiny")
    assert out.returncode == 1 and "not a napari-uda workspace" in out.stderr
    out = cli("selftrain", "--workspace", str(run["ws"]), "--rounds", "1", "--budget", "tiny")
    assert out.returncode == 0 and "already done" in out.stdout
    args = [*run["args"][:run["args"].index("--workspace") + 1], str(tmp_path / "w2"), "--budget", "tiny",
            "--auto-accept", "--select", "uncertainty", "--rounds", "1"]
    out = cli(*args)
    assert out.returncode == 1 and "selection by uncertainty needs at least 2 self-training rounds" in out.stderr


def test_uncertainty_selection_takes_the_union_of_the_real_rounds(run):
    """After round 1 of the real pipeline (trained by another rule): round 2's selection by
    uncertainty records each case's union of the pooled stage's and round 1's predictions as its
    latest pseudo-label, on the scan's grid, and accepts the least uncertain half of them."""
    from napari_uda.pipeline.workflow import FilterSettings, auto_accept, union_for_round
    from napari_uda.segment.ensemble import union_ensemble

    ws = Workspace.open(run["ws"])
    with ReviewStore.for_workspace(ws.root) as store:
        union_for_round(ws, store, 1)
        (r1,) = store.rounds()
        for q in store.queue("T2WI"):  # withdraw the people's decisions of round 1 (auto never overrides them)
            store.decide(q.case, "undo", "ana")
        taken = auto_accept(store, "T2WI", FilterSettings(rule="uncertainty"))
        for t in sorted((run["root"] / "data/t2wi/images").iterdir()):
            case = t.name.split(".")[0]
            want = union_ensemble([read_volume(ws.predictions_dir(s) / t.name).array for s in ("pooled", "self_training_r1")])
            union = read_volume(ws.predictions_dir("self_training_r1") / "union" / t.name)
            np.testing.assert_array_equal(union.array, want)
            assert union.geometry.matches(read_volume(t).geometry)
            assert store.latest_prediction(case)[1] == str(ws.predictions_dir("self_training_r1") / "union" / t.name)
    finite = sorted((u, c) for c, u in r1.uncertainty.items() if np.isfinite(u))
    assert [c for c, a in taken.items() if a == "accept"] == [c for _, c in finite[:2]]  # the better half of 3: 2


def test_exported_model_folder_predicts_and_translates_as_the_workspace(run, tmp_path):
    import pickle

    import numpy as np

    ws, out = run["ws"], tmp_path / "model"
    marker = tmp_path / "pwned"  # pickles planted where nnU-Net and torch would look: never executed
    for planted in [*ws.glob("nnunet/results/*/*/fold_*/checkpoint_final.pth"), *ws.glob("nnunet/preprocessed/*/*/*.pkl")]:
        planted.write_bytes(pickle.dumps(Planted(marker)))
    for command in (["review", "queue", "--workspace", str(ws)], ["workspace", "--workspace", str(ws)]):
        assert cli(*command).returncode == 0  # opening someone else's workspace for review touches no pickle
    exported = cli("models", "export", "--workspace", str(ws), "--stage", "final", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_stage"] == "self_training_r1" and meta["translator"]["variant"] == "organ-attention"
    assert meta["segmenter"]["folds"] == [0, 1] and meta["evaluation"]["cases"] == 3 and meta["postprocessed"]
    assert not [p for p in out.rglob("*") if p.suffix in (".pth", ".pkl", ".pt")]  # never a pickle
    assert cli("models", "export", "--workspace", str(ws), "--stage", "final", "--out", str(out)).returncode == 1
    for planted in (out / "segmenter/fold_0/checkpoint_final.pth", out / "translator/train_state.pt", out / "model.pkl"):
        planted.write_bytes(pickle.dumps(Planted(marker)))
    target = sorted((run["root"] / "data/t2wi/images").iterdir())[0]
    pred = cli("segment", "predict", "--model", str(out), "--input", str(target), "--out", str(tmp_path / "pred"),
               "--device", "cpu", "--save-probabilities")
    assert pred.returncode == 0, pred.stderr
    for part in ("fold_0", "fold_1", "."):
        np.testing.assert_array_equal(read_volume(tmp_path / "pred" / part / target.name).array,
                                      read_volume(ws / "predictions/self_training_r1" / part / target.name).array)
    ct = run["root"] / "data/ct/images/ct_000.nii.gz"
    for name, translator in (("exported", out), ("workspace", ws / "translators/organ-attention")):
        done = cli("translate", "apply", "--translator", str(translator), "--input", str(ct), "--out", str(tmp_path / name),
                   "--device", "cpu")
        assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read_volume(tmp_path / "exported/ct_000.nii.gz").array,
                                  read_volume(tmp_path / "workspace/ct_000.nii.gz").array)
    assert not marker.exists()
    weights = out / "segmenter/fold_1/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated: one line naming the file
    bad = cli("segment", "predict", "--model", str(out), "--input", str(target), "--out", str(tmp_path / "bad"), "--device", "cpu")
    assert bad.returncode == 1 and str(weights) in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_coarse_to_fine_round_trains_on_organ_crops_and_predicts_inside_the_coarse_region(run):
    """Round 2 with --coarse-to-fine (FLARE 2025): a coarse model on whole volumes at twice the spacing
    and a fine model on organ crops; each target scan is segmented inside the region the coarse model
    found and pasted back onto its own grid. The earlier rounds trained on whole volumes, so the fine
    model trains from scratch rather than fine-tune a model of another input size."""
    ws = run["ws"]
    out = cli("selftrain", "--workspace", str(ws), "--rounds", "2", "--budget", "tiny", "--auto-accept",
              "--select", "consistency", "--coarse-to-fine", "--margin-mm", "6", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = Workspace.open(ws).manifest
    fine, coarse = manifest["models"]["self_training_r2"], manifest["models"]["self_training_r2_coarse"]
    assert fine["crop_margin_mm"] == 6.0 and "crop_margin_mm" not in coarse
    assert (fine["dataset"], coarse["dataset"]) == (112, 512) and fine["budget"] == coarse["budget"] == "tiny-aug"
    assert manifest["pipeline"]["crop_margin_mm"] == 6.0 and manifest["stages"]["self_training_r2"]["coarse_model"] == coarse["path"]
    raw = ws / "nnunet/raw"
    for case in CTS:  # the coarse model sees whole scans at half the resolution, the fine one organ crops
        real = read_volume(run["root"] / "data/ct/images" / f"{case}.nii.gz")
        low = read_volume(raw / "Dataset512_UDA_self_training_r2_coarse/imagesTr" / f"real_{case}_0000.nii.gz")
        crop = read_volume(raw / "Dataset112_UDA_self_training_r2/imagesTr" / f"real_{case}_0000.nii.gz")
        assert low.shape == tuple(n // 2 for n in real.shape) and crop.spacing == real.spacing
        assert all(c <= n for c, n in zip(crop.shape, real.shape)) and crop.shape != real.shape
    records = json.loads((ws / "predictions/self_training_r2/predictions.json").read_text())
    for rec in records:
        target = read_volume(rec["input"])
        fused = read_volume(ws / "predictions/self_training_r2" / f"{rec['case']}.nii.gz")
        assert fused.shape == target.shape and fused.geometry.matches(target.geometry)
        inside = np.zeros(target.shape, bool)
        inside[tuple(slice(a, b) for a, b in rec["roi"])] = True
        assert not fused.array[~inside].any()
    with ReviewStore.for_workspace(ws) as store:
        assert [r.round for r in store.rounds()] == [1, 2]
