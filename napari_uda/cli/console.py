"""Progress of long command-line work: a bar with rate and time left on a terminal, plain lines
when stderr is not one (a log, a pipe, a cluster job), nothing with ``--quiet``, and one JSON
object per line with ``--log-json``. The widgets show the same events in their own bars.

A progress event is a dict: ``task`` (what runs, e.g. ``fold 0 epoch 3/40``'s ``fold 0``),
``done`` and ``total`` when it counts (iterations, epochs, cases), ``text`` for what a plain line
says; any other key is passed through to JSON.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

BAR_WIDTH = 24
PLAIN_EVERY_S = 10.0  # without a terminal: a counting task prints at most one line per 10 s (and its last)


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a non-negative number of seconds."""
    s = int(round(max(0.0, seconds)))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Console:
    """Shows progress events on ``stream`` (stderr by default). ``interactive`` None: whether the
    stream is a terminal. ``clock`` (seconds) is replaceable for tests."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False, log_json: bool = False,
                 interactive: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.log_json, self.clock = quiet, log_json, clock
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._started: dict[str, tuple[float, int]] = {}  # task -> (time, done) of its first count
        self._last_plain: dict[str, float] = {}
        self._bar_open = False

    def rate_and_left(self, task: str, done: int, total: int) -> tuple[float | None, float | None]:
        """Counts per second since the task's first count, and seconds left at that rate."""
        now = self.clock()
        t0, d0 = self._started.setdefault(task, (now, done))
        if now <= t0 or done <= d0:
            return None, None
        rate = (done - d0) / (now - t0)
        return rate, (total - done) / rate

    def __call__(self, task: str, done: int | None = None, total: int | None = None, text: str = "",
                 **fields: Any) -> None:
        if self.quiet:
            return
        counting = done is not None and total is not None and total > 0
        rate, left = self.rate_and_left(task, done, total) if counting else (None, None)
        if self.log_json:
            record = {"t": round(self.clock(), 3), "task": task, "done": done, "total": total, "text": text,
                      "rate_per_s": None if rate is None else round(rate, 4),
                      "left_s": None if left is None else round(left, 1), **fields}
            self._write(json.dumps({k: v for k, v in record.items() if v is not None and v != ""}) + "\n")
        elif counting and self.interactive:
            self._bar(task, done, total, rate, left, text)
        elif counting:
            self._plain_count(task, done, total, rate, left, text)
        else:
            self.line(f"[{task}] {text}")

    def line(self, text: str) -> None:
        """A line of its own (closing an open bar first)."""
        if self.quiet or self.log_json:
            return
        if self._bar_open:
            self._write("\n")
            self._bar_open = False
        self._write(text + "\n")

    def _bar(self, task: str, done: int, total: int, rate: float | None, left: float | None, text: str) -> None:
        filled = int(BAR_WIDTH * min(done, total) / total)
        speed = f" {rate:.2f}/s {format_duration(left)} left" if rate is not None and left is not None else ""
        self._write(f"\r\x1b[2K{task} |{'#' * filled}{'.' * (BAR_WIDTH - filled)}| {done}/{total}{speed} {text}".rstrip())
        self._bar_open = done < total
        if not self._bar_open:
            self._write("\n")

    def _plain_count(self, task: str, done: int, total: int, rate: float | None, left: float | None, text: str) -> None:
        now = self.clock()
        first, last = task not in self._last_plain, done >= total
        if not (first or last or now - self._last_plain[task] >= PLAIN_EVERY_S):
            return
        self._last_plain[task] = now
        speed = f", {rate:.2f}/s, {format_duration(left)} left" if rate is not None and left is not None else ""
        self.line(f"[{task} {done}/{total}{speed}] {text}".rstrip())

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def show_training(console: Console, event: dict, task: str) -> None:
    """nnU-Net trainer events: a bar per epoch of iterations, one over the epochs, other notes."""
    if "iteration" in event:
        console(f"{task} epoch {event['of_epoch']}", event["iteration"], event["num_iterations"], "iterations",
                unit="iterations")
    elif "epoch" in event:
        console(task, event["epoch"], event["num_epochs"], f"epochs, train_loss={event['train_loss']:.3f} "
                f"val_loss={event['val_loss']:.3f}", pseudo_dice=event.get("pseudo_dice"))
    else:
        console(task, text=event.get("event", ""))


def event_printer(console: Console) -> Callable[[dict], None]:
    """The pipeline's progress events on the console."""
    def show(event: dict) -> None:
        task = event["stage"] + (f" fold {event['fold']}" if "fold" in event else "")
        if "iteration" in event:
            show_training(console, event, task)
        else:
            console(task, event.get("done"), event.get("total"), event["message"])
    return show
