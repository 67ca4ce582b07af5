"""The job protocol: progress events that survive a trip through a file, a stop asked for ends a
job with Cancelled, and the command line says so in one line."""
from __future__ import annotations

import pytest

from napari_uda.core.child import LineFollower
from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Cancelled, Event, EventLog, check_stop, emit, tee, within


def test_event_line_and_json_round_trip():
    e = Event("fold 0", "epoch 3/40 train_loss=0.512", 120, 1600, "iterations", {"pseudo_dice": [0.5, 0.25]})
    assert e.counts and e.line() == "fold 0 120/1600 iterations: epoch 3/40 train_loss=0.512"
    assert Event.from_json(e.to_json()) == e
    bare = Event("pipeline")
    assert not bare.counts and bare.line() == "pipeline" and bare.to_dict() == {"task": "pipeline"}
    assert not Event("x", done=0, total=0).counts  # nothing to count
    assert Event("predict", "a", 1, 2).within("organ_attention").line() == "organ_attention predict 1/2: a"
    for not_an_event in ("plain text", "[1, 2]", '{"message": "no task"}', '{"task": "cut', ""):
        assert Event.from_json(not_an_event) is None


def test_emit_within_and_tee_deliver_the_same_event():
    seen, other = [], []
    emit(None, "nobody listens")  # no callback: nothing happens
    emit(within(tee(seen.append, other.append, None), "stage"), "fold 1", "done", 2, 2, "cases", seconds=1.5)
    assert seen == other == [Event("stage fold 1", "done", 2, 2, "cases", {"seconds": 1.5})]
    assert within(None, "stage") is None


def test_event_log_lines_are_read_back_after_a_torn_line(tmp_path):
    """A writer killed mid-line leaves half a line; the next writer starts a new one, and a follower
    reads every whole event, in order, and nothing else."""
    path = tmp_path / "logs" / "events.jsonl"
    follower = LineFollower(path)
    EventLog(path)(Event("a", done=1, total=3))
    with open(path, "a") as f:
        f.write('{"task": "a", "do')  # killed here
    log = EventLog(path)
    log(Event("a", done=2, total=3))
    assert [e.done for e in follower.events()] == [1, 2]
    log(Event("a", done=3, total=3))
    assert [e.done for e in follower.events()] == [3]  # only what is new


def test_check_stop_raises_only_when_asked():
    check_stop(None, "nothing")
    check_stop(lambda: False, "prediction")
    with pytest.raises(Cancelled, match="^prediction cancelled$") as exc:
        check_stop(lambda: True, "prediction")
    assert isinstance(exc.value, UdaError)  # every caller that reports user errors reports it too
    with pytest.raises(Cancelled, match="^pipeline cancelled; run the same command again to continue$"):
        check_stop(lambda: True, "pipeline", "run the same command again to continue")


def test_a_cancelled_command_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    from napari_uda import cli
    from napari_uda.cli import models

    def stopped(args):
        raise Cancelled("export cancelled")

    monkeypatch.setattr(models, "cmd_export", stopped)
    assert cli.main(["models", "export", "--workspace", str(tmp_path), "--stage", "x", "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["napari-uda: export cancelled"]
