"""The command line's progress output: bars on a terminal, plain lines in a log, JSON, quiet."""
from __future__ import annotations

import io
import json
import subprocess
import sys

from napari_uda.cli.console import Console, format_duration
from napari_uda.core.jobs import Event


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(75.4) == "1:15"
    assert format_duration(3 * 3600 + 62) == "3:01:02"


def test_bar_shows_rate_and_time_left_on_a_terminal():
    out, clock = io.StringIO(), Clock()
    console = Console(out, interactive=True, clock=clock)
    console(Event("fold 0", "", 0, 40, "epochs"))
    clock.now += 10.0
    console(Event("fold 0", "loss=0.5", 10, 40, "epochs"))  # 1 epoch/s; 30 left -> 0:30
    last = out.getvalue().split("\r")[-1]
    assert "fold 0 |" + "#" * 6 + "." * 18 + "| 10/40 1.00/s 0:30 left epochs loss=0.5" in last
    assert not out.getvalue().endswith("\n")  # the bar stays on its line
    clock.now += 30.0
    console(Event("fold 0", "", 40, 40, "epochs"))
    assert out.getvalue().endswith("| 40/40 1.00/s 0:00 left epochs\n")
    console(Event("pipeline", "scored 8 case(s)"))
    assert out.getvalue().endswith("\n[pipeline] scored 8 case(s)\n")


def test_plain_lines_when_not_a_terminal_at_most_every_ten_seconds():
    out, clock = io.StringIO(), Clock()
    console = Console(out, interactive=False, clock=clock)
    for i in range(1, 101):  # 100 iterations, one every 0.5 s
        console(Event("translator", f"loss={1 / i:.3f}", i, 100))
        clock.now += 0.5
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "[translator 1/100] loss=1.000"
    assert lines[1] == "[translator 21/100, 2.00/s, 0:40 left] loss=0.048"  # 10 s after the first line
    assert lines[-1] == "[translator 100/100, 2.00/s, 0:00 left] loss=0.010"
    assert len(lines) == 6  # 1, 21, 41, 61, 81, 100


def test_json_lines_and_quiet():
    out, clock = io.StringIO(), Clock()
    console = Console(out, log_json=True, clock=clock)
    console(Event("predict fold 1", "case_a 2.0 s", 1, 4, "cases"))
    clock.now += 2.0
    second_event = Event("predict fold 1", "case_b 2.0 s", 2, 4, "cases", {"seconds": 2.0})
    console(second_event)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"t": 100.0, "task": "predict fold 1", "message": "case_a 2.0 s", "done": 1, "total": 4,
                     "unit": "cases"}
    assert second["rate_per_s"] == 0.5 and second["left_s"] == 4.0 and second["data"] == {"seconds": 2.0}
    assert Event.from_json(out.getvalue().splitlines()[1]) == second_event  # what a parent process reads back
    quiet = io.StringIO()
    Console(quiet, quiet=True)(Event("fold 0", "x", 1, 2))
    Console(quiet, quiet=True).line("note")
    assert quiet.getvalue() == ""


def test_cli_quiet_and_log_json(tmp_path):
    """`--quiet` leaves the result line only; `--log-json` gives one parsable object per progress line."""
    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "napari_uda.cli", *flags, "phantom", str(tmp_path / flags[0]),
                               "--cases", "2", "--modalities", "ct", "--shape", "8", "16", "16"],
                              capture_output=True, text=True, timeout=120)

    quiet, as_json = run("--quiet"), run("--log-json")
    assert quiet.returncode == 0 and quiet.stderr == "" and "wrote 2 cases" in quiet.stdout
    events = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert [(e["task"], e["done"], e["total"]) for e in events] == [("phantom", 1, 2), ("phantom", 2, 2)]
