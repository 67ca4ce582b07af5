"""The workspace manifest, automatic acceptance, self-training rounds in the review store, small-data splits."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from napari_uda.core.choices import get_budget, pipeline_budget
from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, write_volume
from napari_uda.core.records import RoundRecord, StageRecord
from napari_uda.core.workspace import MANIFEST, Workspace
from napari_uda.data.phantom import write_phantom_dataset
from napari_uda.pipeline.workflow import FilterSettings, auto_accept, dataset_id, stage_order
from napari_uda.pseudo.filters import FilterResult
from napari_uda.review.store import MIGRATIONS, SCHEMA_VERSION, ReviewStore
from napari_uda.segment.segmenter import _write_small_splits


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsdata")
    write_phantom_dataset(root, {"ct": 2, "t2wi": 2}, seed=4, shape=(16, 32, 32))
    return root


def test_create_reopen_and_manifest(data, tmp_path):
    ws = Workspace.create(tmp_path / "w", data / "ct/images", data / "ct/labels", data / "t2wi/images", "t2wi")
    manifest = json.loads((tmp_path / "w" / MANIFEST).read_text())
    assert manifest["modality"] == "T2WI" and len(manifest["data"]["target_images"]) == 2
    assert manifest["data"]["source_labels"][0].endswith("ct/labels/ct_000.nii.gz")
    ws.record("cyclegan", StageRecord("predicted", "x"))
    ws.add_round(RoundRecord(1, "self_training_r1", accepted=2))
    again = Workspace.open(tmp_path / "w")  # a new session sees the same state
    stage, (r1,) = again.stage("cyclegan"), again.rounds()
    assert stage.status == "predicted" and stage.predictions == "x" and stage.at and not again.stage_done("cyclegan")
    assert r1.accepted == 2 and again.stage("nothing") is None and again.model("cyclegan") is None
    on_disk = json.loads((tmp_path / "w" / MANIFEST).read_text())
    assert on_disk["stages"]["cyclegan"] == {"status": "predicted", "predictions": "x", "round": 0, "at": stage.at}
    assert not list((tmp_path / "w").glob("*.tmp"))
    rows = dict(again.summary({"accepted": 1}))
    assert rows["stage cyclegan"] == "predicted" and rows["round 1"] == "2 accepted pseudo-labels"
    assert Workspace.create(tmp_path / "w", data / "ct/images", data / "ct/labels", data / "t2wi/images", "T2WI").manifest == again.manifest
    with pytest.raises(UdaError, match="other data or another modality"):
        Workspace.create(tmp_path / "w", data / "ct/images", data / "ct/labels", data / "t2wi/images", "C+V")


def test_bad_workspaces_are_clear_errors(data, tmp_path):
    with pytest.raises(UdaError, match="not a napari-uda workspace"):
        Workspace.open(tmp_path)
    (tmp_path / MANIFEST).write_text("{ half")
    with pytest.raises(UdaError, match="damaged manifest"):
        Workspace.open(tmp_path)
    good = Workspace.create(tmp_path / "good", data / "ct/images", data / "ct/labels", data / "t2wi/images", "T2WI")
    for key in ("modality", "models", "rounds"):
        manifest = {k: v for k, v in good.manifest.items() if k != key}
        (tmp_path / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(UdaError, match=f"workspace.json: damaged manifest \\('{key}' missing"):
            Workspace.open(tmp_path)
    with pytest.raises(UdaError, match="MRI or PET"):
        Workspace.create(tmp_path / "x", data / "ct/images", data / "ct/labels", data / "t2wi/images", "CT")
    with pytest.raises(UdaError, match="no labels for"):
        Workspace.create(tmp_path / "x", data / "ct/images", data / "t2wi/images", data / "t2wi/images", "T2WI")


def test_stage_names_and_order():
    assert stage_order(["final", "self_training_r2", "organ_attention", "self_training_r1", "no_adaptation", "cyclegan"]) == [
        "no_adaptation", "cyclegan", "organ_attention", "self_training_r1", "self_training_r2", "final"]
    assert dataset_id("self_training_r2") == 112 and dataset_id("no_adaptation") == 101
    with pytest.raises(UdaError):
        dataset_id("other")


@pytest.fixture
def store(tmp_path):
    geometry = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with ReviewStore(tmp_path / "review.sqlite") as s:
        mid = s.add_model("r0", round=0)
        # case: (score, filters pass)
        for name, score, ok in (("a", 0.9, True), ("b", 0.8, False), ("c", 0.7, True), ("d", 0.6, True)):
            img = write_volume(Volume(np.zeros((2, 4, 4), np.int16), geometry), tmp_path / "img" / f"{name}.nii.gz")
            lab = write_volume(Volume(np.ones((2, 4, 4), np.uint8), geometry), tmp_path / "pred" / f"{name}.nii.gz")
            s.add_case(name, img, "T2WI")
            s.add_prediction(name, mid, lab, {1: score}, score,
                             [FilterResult("organs_present", ok, "all present" if ok else "missing: liver")])
        yield s


def test_auto_accept_is_explicit_and_never_overrides_people(store):
    store.decide("c", "reject", "ana", note="liver leaks into the kidney")
    settings = FilterSettings(top_k=1)
    taken = auto_accept(store, "T2WI", settings)
    assert taken == {"a": "accept", "b": "reject", "d": "reject"}  # c was decided by a person
    history = store.history("a")
    assert history[-1].reviewer == settings.reviewer() and history[-1].reviewer.startswith("auto:")
    assert json.loads(history[-1].reviewer[5:]) == {"agreement": None, "rule": "filters", "sigma": 3.0,
                                                   "top_k": 1}
    assert store.history("b")[-1].note == "organs_present: missing: liver"
    assert store.history("d")[-1].note.startswith("outside the top 1 (case score 0.")
    assert store.state("c")[1].reviewer == "ana"
    n = store.db.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert auto_accept(store, "T2WI", settings) == {}  # the same predictions are not decided twice
    assert store.db.execute("SELECT count(*) FROM decisions").fetchone()[0] == n


def test_rounds_snapshot_uncertainty_and_new_predictions(store, tmp_path):
    store.decide("a", "accept", "ana")
    store.decide("d", "accept", "ben")
    used = store.start_round(1, {"budget": "tiny"})
    assert [c for c, _ in used] == ["a", "d"]
    store.decide("d", "undo", "ben")  # later decisions do not change what round 1 trained on
    assert [c for c, _ in store.round_cases(1)] == ["a", "d"] and [c for c, _ in store.accepted()] == ["a"]
    with pytest.raises(UdaError, match="already recorded"):
        store.start_round(1, {})
    m1 = store.add_model("r1", round=1)
    lab = write_volume(Volume(np.full((2, 4, 4), 2, np.uint8), Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0))),
                       tmp_path / "pred1" / "a.nii.gz")
    store.add_prediction("a", m1, lab, {1: 0.95}, 0.95)
    store.finish_round(1, m1, {"a": 0.1, "b": 0.4})
    (r,) = store.rounds()
    assert r.round == 1 and r.model_id == m1 and r.cases == ["a", "d"] and r.uncertainty == {"a": 0.1, "b": 0.4}
    assert r.settings == {"budget": "tiny"} and r.finished
    row = next(q for q in store.queue() if q.case == "a")
    assert row.label == str(lab) and row.state == "accepted" and not row.decided_on_latest
    assert store.state_counts() == {"not reviewed": 3, "accepted": 1, "rejected": 0, "edited": 0}


def test_migration_from_version_1_keeps_decisions(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO cases VALUES ('a', '/x', 'T2WI', 'h', 'now')")
    db.execute("INSERT INTO decisions (case_id, action, reviewer, at) VALUES ('a', 'reject', 'ana', 'now')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with ReviewStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 2
        assert s.state("a")[0] == "rejected" and s.rounds() == []


def test_small_datasets_get_one_fold_per_case(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    (raw / "labelsTr").mkdir(parents=True)
    pre.mkdir()
    for i in range(3):
        (raw / "labelsTr" / f"c{i}.nii.gz").write_bytes(b"")
    _write_small_splits(pre, raw)
    splits = json.loads((pre / "splits_final.json").read_text())
    assert len(splits) == 3 and sorted(v for s in splits for v in s["val"]) == ["c0", "c1", "c2"]
    assert all(len(s["train"]) == 2 for s in splits)
    for i in range(3, 5):
        (raw / "labelsTr" / f"c{i}.nii.gz").write_bytes(b"")
    (pre / "splits_final.json").unlink()
    _write_small_splits(pre, raw)  # 5 or more cases: nnU-Net's own 5-fold split
    assert not (pre / "splits_final.json").exists()


def test_auto_accept_by_consistency_alone(store):
    """FLARE 2024's rule: the top K by fold consistency, whatever the filters say."""
    settings = FilterSettings(top_k=2, rule="consistency")
    assert auto_accept(store, "T2WI", settings) == {"a": "accept", "b": "accept", "c": "reject", "d": "reject"}
    assert '"rule":"consistency"' in store.history("b")[-1].reviewer
    with pytest.raises(UdaError, match="acceptance rule"):
        FilterSettings(rule="vibes")


def test_auto_accept_takes_the_better_half_by_default(store):
    """No ``top_k``: half the scored cases, rounded up (2 of 4 here; with the filters rule the
    failing b is skipped, so a and c); the CPU budgets accept by consistency, the GPU one by filters."""
    assert auto_accept(store, "T2WI", FilterSettings()) == {"a": "accept", "b": "reject", "c": "accept", "d": "reject"}
    assert store.history("d")[-1].note == "outside the top 2 (case score 0.600)"
    assert FilterSettings().limit(5) == 3 and FilterSettings(top_k=7).limit(5) == 7
    assert [get_budget(b).accept_rule for b in ("tiny", "small", "full")] == ["consistency", "consistency", "filters"]


def test_a_segmenter_budget_belongs_to_its_pipeline_budget():
    """An imported fine-tuned model (``small-aug-ft``) runs in the ``small`` pipeline budget."""
    assert [pipeline_budget(b) for b in ("small", "small-aug", "small-aug-ft", "tiny-ft", "full-aug")] == \
        ["small", "small", "small", "tiny", "full"]


def test_auto_accept_by_uncertainty_across_rounds(store, tmp_path):
    """ASIT's rule: before any round there is no uncertainty, so fold consistency decides; after
    a round, the lowest uncertainty does, and a case whose round lost all foreground is out."""
    settings = FilterSettings(top_k=2, rule="uncertainty")
    assert auto_accept(store, "T2WI", settings) == {"a": "accept", "b": "accept", "c": "reject", "d": "reject"}
    assert "round 1: no uncertainty" in store.history("a")[-1].note
    store.start_round(1, {"rule": "uncertainty"})
    m1 = store.add_model("r1", round=1)
    for case in "abcd":  # round 1's predictions: new pseudo-labels to decide on
        lab = write_volume(Volume(np.ones((2, 4, 4), np.uint8), Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0))),
                           tmp_path / "pred1" / f"{case}.nii.gz")
        store.add_prediction(case, m1, lab, {1: 0.5}, 0.5)
    store.finish_round(1, m1, {"a": 0.3, "b": float("inf"), "c": 0.05, "d": 0.1})
    assert auto_accept(store, "T2WI", settings) == {"c": "accept", "d": "accept", "a": "reject", "b": "reject"}
    assert store.history("c")[-1].note.startswith("uncertainty 0.0500 across rounds")
    assert store.history("a")[-1].note.startswith("outside the top 2 (uncertainty 0.3000")
    assert store.history("b")[-1].note == "uncertainty: a round predicted no foreground"


def test_union_of_the_rounds_becomes_the_pseudo_label(data, tmp_path):
    """The union over rounds is written on the scan's grid, recorded as the case's latest prediction
    with an uncertainty outcome, and is what accepting the case trains on."""
    from napari_uda.core.io import read_volume
    from napari_uda.pipeline.workflow import record_union_labels

    ws = Workspace.create(tmp_path / "w", data / "ct/images", data / "ct/labels", data / "t2wi/images", "T2WI")
    targets = ws.files("target_images")
    grid = read_volume(targets[0]).geometry
    shape = read_volume(targets[0]).array.shape
    base, r1 = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    base[2:6, 4:10, 4:10] = 1  # liver in the base stage
    r1[2:6, 4:8, 4:10] = 1  # round 1 shrinks the liver ...
    r1[8:10, 20:24, 20:24] = 3  # ... and finds a kidney
    want = base.copy()
    want[8:10, 20:24, 20:24] = 3
    with ReviewStore.for_workspace(ws.root) as store:
        m = store.add_model("r1", round=1)
        for path in targets:
            case = path.name.split(".")[0]
            for stage, labels in (("organ_attention", base), ("self_training_r1", r1)):
                write_volume(Volume(labels, grid), ws.predictions_dir(stage) / f"{case}.nii.gz")
            store.add_case(case, path, "T2WI")
            store.add_prediction(case, m, ws.predictions_dir("self_training_r1") / f"{case}.nii.gz", {1: 0.7}, 0.7,
                                 [FilterResult("organs_present", True, "all present")])
        cases = [p.name.split(".")[0] for p in targets]
        record_union_labels(ws, store, ["organ_attention", "self_training_r1"], 1, {cases[0]: 0.25, cases[1]: float("inf")})
        union = read_volume(ws.predictions_dir("self_training_r1") / "union" / f"{cases[0]}.nii.gz")
        np.testing.assert_array_equal(union.array, want)
        assert union.geometry == grid
        row = next(q for q in store.queue("T2WI") if q.case == cases[0])
        assert row.label.endswith(f"union/{cases[0]}.nii.gz") and row.case_score == pytest.approx(0.7)
        assert {f.name: (f.passed, f.reason) for f in row.filters} == {
            "organs_present": (True, "all present"), "uncertainty": (True, "0.2500 across 2 rounds")}
        store.start_round(1, {"rule": "uncertainty"})
        store.finish_round(1, m, {cases[0]: 0.25, cases[1]: float("inf")})
        assert auto_accept(store, "T2WI", FilterSettings(rule="uncertainty")) == {cases[0]: "accept", cases[1]: "reject"}
        assert store.accepted() == [(cases[0], row.label)]
