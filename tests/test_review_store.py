"""The review store: decisions, undo, queue, edited labels, and durability with real processes."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, read_volume, write_volume
from napari_uda.pseudo.filters import FilterResult
from napari_uda.review.store import SCHEMA_VERSION, FilterOutcome, ReviewStore, file_hash, label_hash


@pytest.fixture
def store(tmp_path):
    geometry = Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0))
    with ReviewStore(tmp_path / "review.sqlite") as s:
        mid = s.add_model("round0", round=0, settings={"budget": "tiny"})
        for i, score in enumerate([0.7, 0.9, 0.8]):
            img = write_volume(Volume(np.full((4, 6, 6), i, np.int16), geometry), tmp_path / "img" / f"c{i}.nii.gz")
            lab = write_volume(Volume(np.full((4, 6, 6), i, np.uint8), geometry), tmp_path / "pred" / f"c{i}.nii.gz")
            s.add_case(f"c{i}", img, "T2WI")
            s.add_prediction(f"c{i}", mid, lab, {1: score, 2: score / 2}, score,
                             [FilterResult("organs_present", i != 2, "ok" if i != 2 else "missing: spleen")])
        yield s


def test_schema_and_pragmas(store):
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(Exception):
        store.db.execute("INSERT INTO decisions (case_id, action, reviewer, at) VALUES ('nope', 'accept', 'x', 'now')")


def test_queue_ranked_with_scores_filters_and_state(store):
    q = store.queue("T2WI")
    assert [r.case for r in q] == ["c1", "c2", "c0"]
    assert q[0].organ_consistency == {1: 0.9, 2: 0.45} and q[0].state == "not reviewed"
    assert q[1].filters == (FilterOutcome("organs_present", False, "missing: spleen"),)
    assert q[1].failed == ["organs_present: missing: spleen"] and q[0].failed == []
    assert store.queue("PET-FDG") == []


def test_training_pairs_scores_and_organ_means(store, tmp_path):
    images, labels = store.training_pairs([("c2", "edited/c2.nii.gz"), ("c0", "pred/c0.nii.gz")])
    assert images == [tmp_path / "img" / "c2.nii.gz", tmp_path / "img" / "c0.nii.gz"]
    assert labels == [Path("edited/c2.nii.gz"), Path("pred/c0.nii.gz")] and store.training_pairs([]) == ([], [])
    assert store.case_scores(1) == [0.7, 0.9, 0.8] and store.case_scores(99) == []
    means = store.mean_organ_consistency(1)  # organ 1: the scores, organ 2: half of them
    assert means.keys() == {1, 2} and means[1] == pytest.approx(0.8) and means[2] == pytest.approx(0.4)


def test_a_replacement_keeps_the_scores_and_replaces_an_outcome_of_its_own_name(store, tmp_path):
    """A case's label replaced twice for the same reason (a transfer run again) keeps its scores, its
    other outcomes and one outcome of that name, the latest."""
    mid = store.add_model("ws:transferred:r0", tmp_path / "t", 0)
    label = tmp_path / "pred" / "c2.nii.gz"
    for reason in ("from a.nii.gz", "from b.nii.gz"):
        row = {r.case: r for r in store.queue("T2WI")}["c2"]
        store.add_replacement("c2", mid, label, FilterResult("transferred", True, reason), row)
    row = {r.case: r for r in store.queue("T2WI")}["c2"]
    assert row.case_score == 0.8 and row.organ_consistency == {1: 0.8, 2: 0.4}
    assert row.filters == (FilterOutcome("organs_present", False, "missing: spleen"),
                           FilterOutcome("transferred", True, "from b.nii.gz"))


def test_decisions_history_and_undo(store):
    d = store.decide("c1", "accept", "ana", note="looks right")
    assert d.action == "accept" and d.reviewer == "ana" and d.label_hash == file_hash(store.queue()[0].label)
    assert store.state("c1")[0] == "accepted"
    store.decide("c1", "reject", "ben")
    assert store.state("c1")[0] == "rejected"
    store.decide("c1", "undo", "ben")
    assert store.state("c1")[0] == "accepted"          # back to ana's accept
    store.decide("c1", "undo", "ana")
    assert store.state("c1")[0] == "not reviewed"
    assert [h.action for h in store.history("c1")] == ["accept", "reject", "undo", "undo"]  # nothing is deleted
    with pytest.raises(UdaError, match="reviewer"):
        store.decide("c1", "accept", " ")
    with pytest.raises(UdaError, match="unknown case"):
        store.decide("zz", "accept", "ana")
    with pytest.raises(UdaError, match="unknown decision"):
        store.decide("c1", "maybe", "ana")


def test_reviewer_name_never_becomes_a_path(store, tmp_path):
    """The edited label stays in edited_labels/ whatever the reviewer typed; the name is kept as typed."""
    edited = Volume(np.full((4, 6, 6), 5, np.uint8), Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0)))
    d = store.decide("c0", "edited", "../../x Dr. Müller", edited_label=edited)
    assert Path(d.label_path).parent == store.path.parent / "edited_labels"
    assert Path(d.label_path).name.startswith("c0___.._x_Dr._M_ller__")
    assert d.reviewer == "../../x Dr. Müller"


@pytest.mark.parametrize("bad, message", [
    (Volume(np.full((4, 6, 7), 5, np.uint8), Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0))), "shape .* does not match"),
    (Volume(np.full((4, 6, 6), 5, np.uint8), Geometry((3.0, 1.0, 1.0), (9.0, 2.0, 3.0))), "geometry does not match"),
    (Volume(np.full((4, 6, 6), 5.0, np.float32), Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0))), "stored as float32"),
    (Volume(np.full((4, 6, 6), 14, np.uint8), Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0))), "outside the organ table"),
])
def test_edited_label_checked_before_the_decision(store, bad, message):
    with pytest.raises(UdaError, match=f"my_edit.nii.gz: .*{message}"):
        store.decide("c0", "edited", "ana", edited_label=bad, label_name="my_edit.nii.gz")
    assert store.state("c0")[0] == "not reviewed" and not (store.path.parent / "edited_labels").exists()


def test_edited_label_written_before_commit_and_hash_matches(store, tmp_path):
    edited = Volume(np.full((4, 6, 6), 5, np.uint8), Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0)))
    d = store.decide("c0", "edited", "ana", edited_label=edited)
    assert store.state("c0")[0] == "edited"
    assert read_volume(d.label_path).geometry == edited.geometry
    assert file_hash(d.label_path) == d.label_hash == label_hash(edited.array)
    store.decide("c2", "accept", "ana")
    assert dict(store.accepted()) == {"c0": d.label_path, "c2": str(tmp_path / "pred" / "c2.nii.gz")}


def test_review_store_only_inside_a_workspace(tmp_path):
    from napari_uda.core.workspace import Workspace

    with pytest.raises(UdaError, match="not a napari-uda workspace"):
        ReviewStore.for_workspace(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing created there
    geometry = Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0))
    write_volume(Volume(np.zeros((4, 6, 6), np.int16), geometry), tmp_path / "img" / "c0.nii.gz")
    write_volume(Volume(np.zeros((4, 6, 6), np.uint8), geometry), tmp_path / "lab" / "c0.nii.gz")
    Workspace.create(tmp_path / "ws", tmp_path / "img", tmp_path / "lab", tmp_path / "img", "T2WI")
    with ReviewStore.for_workspace(tmp_path / "ws") as store:
        store.add_case("c0", tmp_path / "img" / "c0.nii.gz", "T2WI")
    (tmp_path / "ws" / "review.sqlite").write_bytes(b"")  # truncated to nothing: not a fresh, empty review
    for leftover in (tmp_path / "ws").glob("review.sqlite-*"):
        leftover.unlink()
    with pytest.raises(UdaError, match="review.sqlite: the review database is an empty file"):
        ReviewStore.for_workspace(tmp_path / "ws")


def test_corrupt_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "review.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UdaError, match="review.sqlite: not a usable review database"):
        ReviewStore(bad)


WRITER = textwrap.dedent("""
    import sys
    from napari_uda.review.store import ReviewStore
    store = ReviewStore(sys.argv[1])
    for i in range(int(sys.argv[3])):
        d = store.decide(f"c{i % 3}", "accept" if i % 2 else "reject", sys.argv[2], note=str(i))
        print(d.id, flush=True)   # printed only after the commit returned
""")


def test_sigkill_loses_no_committed_decision(store):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), "killer", "100000"],
                            stdout=subprocess.PIPE, text=True)
    committed = []
    deadline = time.time() + 60
    while len(committed) < 200 and time.time() < deadline:
        committed.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read().split()
    proc.wait()
    committed += [int(x) for x in rest]
    with ReviewStore(store.path) as fresh:
        assert fresh.integrity_ok()
        ids = {r[0] for r in fresh.db.execute("SELECT id FROM decisions WHERE reviewer = 'killer'")}
    assert set(committed) <= ids and len(committed) >= 200


def test_two_processes_never_lose_each_others_decisions(store):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), name, "150"], stdout=subprocess.PIPE, text=True)
             for name in ("ana", "ben")]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    with ReviewStore(store.path) as fresh:
        assert fresh.integrity_ok()
        for name, out in zip(("ana", "ben"), outs):
            ids = {r[0] for r in fresh.db.execute("SELECT id FROM decisions WHERE reviewer = ?", (name,))}
            assert ids == {int(x) for x in out} and len(ids) == 150


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_uda.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_queue_decide_export(store, tmp_path):
    import json

    from napari_uda.core.workspace import Workspace

    ws = str(tmp_path)
    assert "not a napari-uda workspace" in _cli("review", "queue", "--workspace", ws).stderr
    assert not (tmp_path / "nnunet").exists()
    Workspace.create(tmp_path, tmp_path / "img", tmp_path / "pred", tmp_path / "img", "T2WI")
    q = json.loads(_cli("review", "queue", "--workspace", ws, "--modality", "T2WI", "--json").stdout)
    assert [r["case"] for r in q] == ["c1", "c2", "c0"]
    d = json.loads(_cli("review", "decide", "--workspace", ws, "--case", "c1", "--accept", "--reviewer", "ana",
                        "--note", "fine", "--json").stdout)
    assert d["state"] == "accepted" and d["reviewer"] == "ana"
    edited = write_volume(Volume(np.full((4, 6, 6), 7, np.uint8), Geometry((3.0, 1.0, 1.0), (1.0, 2.0, 3.0))),
                          tmp_path / "my_edit.nii.gz")
    res = _cli("review", "decide", "--workspace", ws, "--case", "c0", "--accept", "--label", str(edited), "--reviewer", "ben")
    assert res.returncode == 0 and "edited" in res.stdout
    assert _cli("review", "decide", "--workspace", ws, "--case", "c2", "--reject", "--reviewer", "ben").returncode == 0
    bad = _cli("review", "decide", "--workspace", ws, "--case", "nope", "--accept", "--reviewer", "ben")
    assert bad.returncode == 1 and bad.stderr.strip() == "napari-uda: error: unknown case 'nope'"
    res = _cli("review", "export", "--workspace", ws, "--dataset", "5", "--name", "Accepted", "--modality", "T2WI")
    assert res.returncode == 0, res.stderr
    raw = tmp_path / "nnunet" / "raw" / "Dataset005_Accepted"
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == ["c0.nii.gz", "c1.nii.gz"]  # c2 was rejected
    assert (read_volume(raw / "labelsTr" / "c0.nii.gz").array == 7).all()                     # the edited label
