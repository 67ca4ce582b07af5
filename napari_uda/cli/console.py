"""Progress of long command-line work: a bar with rate and time left on a terminal, plain lines
when stderr is not one (a log, a pipe, a cluster job), nothing with ``--quiet``, and one JSON
object per line with ``--log-json`` (the event's :meth:`~napari_uda.core.jobs.Event.to_dict` with
``t``, ``rate_per_s`` and ``left_s``, which :meth:`~napari_uda.core.jobs.Event.from_json` reads
back). The widgets show the same :class:`~napari_uda.core.jobs.Event` s in their own bars.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO

from napari_uda.core.jobs import Event

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

    def __call__(self, event: Event) -> None:
        """Show one event (a :data:`~napari_uda.core.jobs.Progress` callback)."""
        if self.quiet:
            return
        task, done, total = event.task, event.done, event.total
        rate, left = self.rate_and_left(task, done, total) if event.counts else (None, None)
        text = " ".join(p for p in (event.unit, event.message) if p)
        if self.log_json:
            record = {"t": round(self.clock(), 3), **event.to_dict(),
                      "rate_per_s": None if rate is None else round(rate, 4),
                      "left_s": None if left is None else round(left, 1)}
            self._write(json.dumps({k: v for k, v in record.items() if v is not None}) + "\n")
        elif event.counts and self.interactive:
            self._bar(task, done, total, rate, left, text)
        elif event.counts:
            self._plain_count(task, done, total, rate, left, text)
        else:
            self.line(f"[{task}] {event.message}")

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
