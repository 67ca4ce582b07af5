"""ASIT's label transfer between two sub-domains of one patient: affine registration on a phantom pair
whose affine and contrast change are known."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, to_sitk
from napari_uda.data.phantom import make_case
from napari_uda.pseudo.filters import FilterResult, mean_dice
from napari_uda.pseudo.label_transfer import transfer_label


def known_affine() -> sitk.AffineTransform:
    """Fixed -> moving mm: 6 degrees about z, 4% larger, shifted (8, -6, 5) mm, about the origin."""
    a = np.deg2rad(6.0)
    t = sitk.AffineTransform(3)
    t.SetMatrix((1.04 * np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])).ravel().tolist())
    t.SetTranslation((8.0, -6.0, 5.0))
    return t


@pytest.fixture(scope="module")
def pair():
    """(moving image, its label, fixed image, the truth on the fixed grid): the fixed scan is the moving
    one under :func:`known_affine`, with inverted contrast and every organ shifted differently."""
    image, label = make_case("t2wi", 0, seed=3, shape=(32, 80, 80))
    offsets = np.random.default_rng(0).uniform(-200, 200, 14)
    other = (image.array.max() - image.array) + offsets[label.array]
    t = known_affine()
    ref = to_sitk(image)
    warp = [sitk.GetArrayFromImage(sitk.Resample(to_sitk(v), ref, t, interp, 0))
            for v, interp in ((image.with_array(other.astype(np.float32)), sitk.sitkLinear), (label, sitk.sitkNearestNeighbor))]
    return image, label, Volume(warp[0], image.geometry), Volume(warp[1], image.geometry)


def test_transferred_label_matches_the_truth(pair):
    moving, label, fixed, truth = pair
    untransferred = mean_dice(label.array, truth.array)
    result = transfer_label(label, moving, fixed)
    assert result.label.geometry.matches(fixed.geometry) and result.label.shape == fixed.shape
    assert mean_dice(result.label.array, truth.array) >= 0.9 > untransferred + 0.2
    assert np.isfinite(result.metric) and result.metric < 0
    again = transfer_label(label, moving, fixed)  # bit for bit: a fixed sample of voxels, on one thread
    assert again.transform.GetParameters() == result.transform.GetParameters() and again.metric == result.metric
    assert np.array_equal(again.label.array, result.label.array)
    with pytest.raises(UdaError, match="seed must be 1 or more"):  # 0 is SimpleITK's "from the clock"
        transfer_label(label, moving, fixed, seed=0)


def test_a_label_off_its_scans_grid_is_refused(pair):
    moving, label, fixed, _ = pair
    with pytest.raises(UdaError, match="does not match"):
        transfer_label(Volume(label.array[1:], Geometry()), moving, fixed)


def test_the_cli_transfers_and_names_a_bad_scan(pair, tmp_path, capsys):
    from napari_uda.cli.app import main
    from napari_uda.core.io import read_volume, write_volume

    moving, label, fixed, truth = pair
    paths = {k: write_volume(v, tmp_path / f"{k}.nii.gz") for k, v in (("moving", moving), ("label", label), ("fixed", fixed))}
    args = [f"--{k}={p}" for k, p in paths.items()]
    assert main(["transfer-label", *args, f"--out={tmp_path / 'out.nii.gz'}"]) == 0
    assert mean_dice(read_volume(tmp_path / "out.nii.gz").array, truth.array) >= 0.9
    bad = fixed.array.copy()
    bad[0, 0, 0] = np.nan
    write_volume(Volume(bad, fixed.geometry), paths["fixed"])
    assert main(["transfer-label", *args, f"--out={tmp_path / 'bad.nii.gz'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"napari-uda: error: {paths['fixed']}: contains NaN or infinite values"
    assert not (tmp_path / "bad.nii.gz").exists()


def test_transferred_labels_enter_the_review_queue_marked_as_transferred(pair, tmp_path, capsys):
    """``review transfer``: each target scan whose patient has a scan in the other sub-domain gets the
    registered label as its latest pseudo-label, keeping its scores and filters and adding a
    ``transferred`` outcome naming the source scan; a reviewer then decides on it like any other."""
    from napari_uda.cli.app import main
    from napari_uda.core.io import read_volume, write_volume
    from napari_uda.core.workspace import Workspace
    from napari_uda.data.phantom import write_phantom_dataset
    from napari_uda.review.store import ReviewStore

    moving, label, fixed, truth = pair
    write_phantom_dataset(tmp_path / "data", {"ct": 1}, seed=1, shape=(16, 32, 32))
    targets = [write_volume(fixed, tmp_path / "t2" / f"patient_{i}_t2.nii.gz") for i in ("01", "02")]
    for name in ("patient_01_t1", "patient_03_t1"):
        write_volume(moving, tmp_path / "t1" / f"{name}.nii.gz")
        write_volume(label, tmp_path / "t1_labels" / f"{name}.nii.gz")
    ws = Workspace.create(tmp_path / "ws", tmp_path / "data/ct/images", tmp_path / "data/ct/labels", tmp_path / "t2", "T2WI")
    with ReviewStore.for_workspace(ws.root) as store:  # the segmenter's own pseudo-labels, as scoring leaves them
        model = store.add_model("ws:organ_attention", None, 0)
        for target in targets:
            case = target.name.removesuffix(".nii.gz")
            store.add_case(case, target, "T2WI")
            own = write_volume(Volume(np.zeros(fixed.shape, np.uint8), fixed.geometry), tmp_path / "own" / target.name)
            store.add_prediction(case, model, own, {1: 0.5}, 0.5, [FilterResult("organs present", False, "liver missing")])
    args = ["review", "transfer", f"--workspace={ws.root}", f"--scans={tmp_path / 't1'}", f"--labels={tmp_path / 't1_labels'}"]
    capsys.readouterr()
    assert main([*args, "--patient", "^(patient_[0-9]+)", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["patient_01_t2"]
    with ReviewStore.for_workspace(ws.root) as store:
        rows = {r.case: r for r in store.queue("T2WI")}
        moved, alone = rows["patient_01_t2"], rows["patient_02_t2"]
        assert [f.name for f in moved.filters] == ["organs present", "transferred"] and moved.case_score == 0.5
        assert "from patient_01_t1.nii.gz (patient 'patient_01') by affine registration" in moved.filters[1].reason
        assert mean_dice(read_volume(moved.label).array, truth.array) >= 0.9
        assert alone.label == str(tmp_path / "own/patient_02_t2.nii.gz")  # no scan of patient 02 in the other sub-domain
        store.decide("patient_01_t2", "accept", "ana")
        assert store.accepted() == [("patient_01_t2", moved.label)]
    capsys.readouterr()
    assert main([*args, "--patient", "^(nobody)"]) == 1
    assert capsys.readouterr().err.strip().endswith("none of the 2 scans belongs to a patient of the workspace's 2 target "
                                                   "scans (patients are case names matched by '^(nobody)')")


def test_similarity_is_the_pearson_correlation_and_the_pairing_the_best_permutation():
    """Against references written independently: numpy's correlation, and every assignment tried."""
    from itertools import permutations

    from napari_uda.pseudo.volume_matching import match_volumes, similarity_matrix

    rng = np.random.default_rng(5)
    targets = [rng.normal(size=(3, 4, 5)) for _ in range(3)]
    sources = [t + rng.normal(scale=2.0, size=t.shape) for t in targets] + [rng.normal(size=(3, 4, 5))]
    sim = similarity_matrix(targets, sources)
    reference = np.corrcoef([a.ravel() for a in [*targets, *sources]])[:3, 3:]
    np.testing.assert_allclose(sim, reference, atol=1e-12)
    best = max(permutations(range(4), 3), key=lambda cols: sum(sim[t, c] for t, c in enumerate(cols)))
    matches = match_volumes(targets, sources)
    assert [(m.target, m.source) for m in matches] == list(enumerate(best))
    assert all(m.runner_up == max(np.delete(sim[m.target], m.source)) for m in matches)


def test_volume_matching_pairs_each_scan_with_the_same_patient_in_another_sequence():
    """Five patients scanned as T2WI and again, moved, as T1 in-phase, the second set in another
    order: each T2WI scan is paired with its own patient's T1 scan."""
    from napari_uda.data.phantom import make_same_patient
    from napari_uda.pseudo.volume_matching import match_volumes, sobel_signature

    order = [3, 0, 4, 1, 2]
    t2 = [sobel_signature(make_case("t2wi", i, seed=4, shape=(24, 80, 80))[0]) for i in range(5)]
    t1 = [sobel_signature(make_same_patient("inphase", "t2wi", i, seed=4, shape=(24, 80, 80))[0]) for i in order]
    matches = match_volumes(t2, t1)
    assert {m.target: order[m.source] for m in matches} == {i: i for i in range(5)}
    assert all(m.similarity > m.runner_up for m in matches)


def test_the_cli_pairs_by_volume_when_the_names_differ(tmp_path, capsys):
    """``review transfer --pair-by volume``: targets and the other sub-domain's scans share no names;
    each target gets its own patient's label (reason names the scan and the similarity); --patient
    with volume matching is one line."""
    from napari_uda.cli.app import main
    from napari_uda.core.io import read_volume, write_volume
    from napari_uda.core.workspace import Workspace
    from napari_uda.data.phantom import make_same_patient, write_phantom_dataset
    from napari_uda.review.store import ReviewStore

    write_phantom_dataset(tmp_path / "data", {"ct": 1}, seed=1, shape=(16, 32, 32))
    truths = {}
    for i, name in ((0, "b_17"), (1, "a_03")):  # the T1 scans sorted the other way round
        image, truth = make_case("t2wi", i, seed=6, shape=(24, 80, 80))
        truths[f"t2_{i}"] = (truth, name)
        write_volume(image, tmp_path / "t2" / f"t2_{i}.nii.gz")
        t1, t1_label = make_same_patient("inphase", "t2wi", i, seed=6, shape=(24, 80, 80))
        write_volume(t1, tmp_path / "t1" / f"{name}.nii.gz")
        write_volume(t1_label, tmp_path / "t1_labels" / f"{name}.nii.gz")
    ws = Workspace.create(tmp_path / "ws", tmp_path / "data/ct/images", tmp_path / "data/ct/labels", tmp_path / "t2", "T2WI")
    args = ["review", "transfer", f"--workspace={ws.root}", f"--scans={tmp_path / 't1'}", f"--labels={tmp_path / 't1_labels'}"]
    assert main([*args, "--pair-by", "volume", "--patient", "^(a)"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("volume matching pairs scans without names: give "
                                                                     "one of the two")
    assert main([*args, "--pair-by", "volume", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    with ReviewStore.for_workspace(ws.root) as store:
        rows = {r.case: r for r in store.queue("T2WI")}
    for case, (truth, name) in truths.items():
        assert done[case].startswith(f"from {name}.nii.gz (volume matching, similarity ")
        assert mean_dice(read_volume(rows[case].label).array, truth.array) >= 0.8


def test_the_pipeline_transfers_another_workspaces_final_labels_into_the_queue(pair, tmp_path, capsys):
    """``selftrain``/``pipeline --transfer-from W_OTHER``: ASIT's multi-domain matching in the pipeline.
    The final labels of the workspace that adapted to the same patients' other sub-domain are
    registered onto this workspace's target scans and become their latest pseudo-labels, marked as
    transferred with that workspace named; automatic acceptance says so in its note (the round then
    trains on them); once per round; recorded in the manifest; misuse is one line before any work."""
    from napari_uda.cli.app import main
    from napari_uda.core.io import read_volume, write_volume
    from napari_uda.core.records import PipelineRecord, StageRecord
    from napari_uda.core.workspace import Workspace
    from napari_uda.data.phantom import write_phantom_dataset
    from napari_uda.pipeline.workflow import FilterSettings, auto_accept, transfer_for_round
    from napari_uda.review.store import ReviewStore

    moving, label, fixed, truth = pair
    write_phantom_dataset(tmp_path / "data", {"ct": 1}, seed=1, shape=(16, 32, 32))
    ct = (tmp_path / "data/ct/images", tmp_path / "data/ct/labels")
    write_volume(moving, tmp_path / "t1" / "patient_01_t1.nii.gz")
    other = Workspace.create(tmp_path / "w_t1", *ct, tmp_path / "t1", "InPhase")  # finished: its final labels
    write_volume(label, other.predictions_dir("final") / "patient_01_t1.nii.gz")
    other.record("final", StageRecord("done", str(other.predictions_dir("final")), postprocessed=True))
    unfinished = Workspace.create(tmp_path / "w_t1_new", *ct, tmp_path / "t1", "InPhase")
    targets = [write_volume(fixed, tmp_path / "t2" / f"patient_{i}_t2.nii.gz") for i in ("01", "02")]
    ws = Workspace.create(tmp_path / "ws", *ct, tmp_path / "t2", "T2WI")  # its base stage scored into the queue
    ws.set_pipeline(PipelineRecord("organ-attention", "tiny", "organ_attention"))
    ws.record("organ_attention", StageRecord("done", str(tmp_path / "own")))
    with ReviewStore.for_workspace(ws.root) as store:
        model = store.add_model("ws:organ_attention", None, 0)
        for target in targets:
            case = target.name.removesuffix(".nii.gz")
            store.add_case(case, target, "T2WI")
            own = write_volume(Volume(np.zeros(fixed.shape, np.uint8), fixed.geometry), tmp_path / "own" / target.name)
            store.add_prediction(case, model, own, {1: 0.5}, 0.5 + 0.1 * (case == "patient_01_t2"))

    args = ["selftrain", f"--workspace={ws.root}", "--rounds=0", "--budget=tiny", "--patient", "^(patient_[0-9]+)"]
    capsys.readouterr()
    for source, says in ((ws.root, "cannot transfer labels from itself"), (tmp_path / "t1", "not a napari-uda workspace"),
                         (unfinished.root, "no final predictions to transfer labels from")):
        assert main([*args, f"--transfer-from={source}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert Workspace.open(ws.root).pipeline().transfer_from is None  # nothing recorded by a refused run
    pipeline = ["pipeline", f"--source-images={ct[0]}", f"--source-labels={ct[1]}", f"--target-images={tmp_path / 't2'}",
                "--modality=T2WI", f"--workspace={tmp_path / 'w2'}", "--budget=tiny", f"--transfer-from={unfinished.root}"]
    assert main(pipeline) == 1  # refused before any training
    assert "no final predictions to transfer labels from" in capsys.readouterr().err
    assert not (tmp_path / "w2/translators").exists() or not any((tmp_path / "w2/translators").iterdir())
    assert main([*args, f"--transfer-from={other.root}"]) == 0
    recorded = Workspace.open(ws.root).pipeline()
    assert (recorded.transfer_from, recorded.transfer_pair_by, recorded.transfer_patient) == (
        str(other.root), "name", "^(patient_[0-9]+)")
    with ReviewStore.for_workspace(ws.root) as store:
        rows = {r.case: r for r in store.queue("T2WI")}
        moved = rows["patient_01_t2"]
        assert moved.label == str(ws.predictions_dir("transferred") / "r0" / "patient_01_t2.nii.gz")
        assert [f.name for f in moved.filters] == ["transferred"] and moved.case_score == 0.6
        assert moved.filters[0].reason.startswith(f"from patient_01_t1.nii.gz of {other.root} (patient 'patient_01')")
        assert mean_dice(read_volume(moved.label).array, truth.array) >= 0.9
        assert rows["patient_02_t2"].label == str(tmp_path / "own/patient_02_t2.nii.gz")  # no such patient there
        assert transfer_for_round(Workspace.open(ws.root), store) == {}  # this round's transfer is done
        assert auto_accept(store, "T2WI", FilterSettings(top_k=1)) == {"patient_01_t2": "accept", "patient_02_t2": "reject"}
        assert store.history("patient_01_t2")[-1].note == "case score 0.600; pseudo-label: transferred from another sub-domain"
        assert ("patient_01_t2", moved.label) in store.accepted()  # what the round trains on
    assert main(["workspace", f"--workspace={ws.root}"]) == 0
    assert f"labels transferred from {other.root} (pairs by name)" in capsys.readouterr().out
    assert main([*args[:-2], "--no-transfer"]) == 0
    assert Workspace.open(ws.root).pipeline().transfer_from is None
