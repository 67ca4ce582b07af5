"""The protocol every long job follows, in this process or in a child process.

Progress: a job reports :class:`Event` s to a :data:`Progress` callback; a child process writes the
same events as JSON lines (:meth:`Event.to_json`, :class:`EventLog`) that the parent reads back
(:meth:`Event.from_json`); the console (``cli.console``) and the widgets' job panel show them.
Nothing parses human-readable text.

Cancellation: a job polls a :data:`StopFlag` and, when it turns true, saves what can be resumed
and raises :class:`Cancelled`: never a normal return. Running the same job again resumes it.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from napari_uda.core.errors import UdaError


@dataclass(frozen=True)
class Event:
    """One progress report of a long job.

    ``task``: what runs (``"fold 0"``, ``"translator organ-attention"``, ``"organ_attention fold 1"``),
    the key a progress bar is kept by; ``done``/``total``: counted work, in ``unit`` s
    (``"iterations"``, ``"epochs"``, ``"cases"``, ``"slices"``); ``message``: one line for a status
    bar or a log; ``data``: job-specific JSON values (losses, a preview file, per-class Dice, seconds).
    """

    task: str
    message: str = ""
    done: int | None = None
    total: int | None = None
    unit: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> bool:
        """Whether the event counts work (``done`` of a known, positive ``total``)."""
        return self.done is not None and bool(self.total)

    def line(self) -> str:
        """``task done/total unit: message``, the parts it has."""
        count = f" {self.done}/{self.total}" + (f" {self.unit}" if self.unit else "") if self.counts else ""
        return f"{self.task}{count}" + (f": {self.message}" if self.message else "")

    def within(self, outer: str) -> Event:
        """The same event as part of ``outer`` (its task prefixed: ``"organ_attention fold 0"``)."""
        return replace(self, task=f"{outer} {self.task}")

    def to_dict(self) -> dict[str, Any]:
        """The event's fields that are set, as JSON-ready values."""
        out = {"task": self.task, "message": self.message, "done": self.done, "total": self.total,
               "unit": self.unit, "data": dict(self.data)}
        return {k: v for k, v in out.items() if v not in (None, "", {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event | None:
        """The event a :meth:`to_dict` (or the console's JSON line, which adds keys) holds; None if ``d``
        is not one."""
        if not isinstance(d.get("task"), str):
            return None
        data = d.get("data", {})
        return cls(d["task"], str(d.get("message", "")), d.get("done"), d.get("total"), str(d.get("unit", "")),
                   data if isinstance(data, dict) else {})

    @classmethod
    def from_json(cls, line: str) -> Event | None:
        """The event of one JSON line; None for a line that is not one (other output, a torn line)."""
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            return None
        return cls.from_dict(d) if isinstance(d, dict) else None


Progress = Callable[[Event], None]
StopFlag = Callable[[], bool]


def emit(progress: Progress | None, task: str, message: str = "", done: int | None = None, total: int | None = None,
         unit: str = "", **data: Any) -> None:
    """Report ``Event(task, message, done, total, unit, data)`` to ``progress`` (if there is one)."""
    if progress is not None:
        progress(Event(task, message, done, total, unit, data))


def within(progress: Progress | None, outer: str) -> Progress | None:
    """``progress`` seeing every event as part of ``outer`` (:meth:`Event.within`)."""
    if progress is None:
        return None
    return lambda event: progress(event.within(outer))


def tee(*progresses: Progress | None) -> Progress:
    """One callback reporting to every given one."""
    targets = [p for p in progresses if p is not None]

    def report(event: Event) -> None:
        for p in targets:
            p(event)

    return report


class EventLog:
    """A :data:`Progress` appending each event as a JSON line to ``path`` (what a child process writes
    for its parent, :class:`napari_uda.core.child.LineFollower`). A half line left by a killed
    writer is ended first, so the next event is a line of its own."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, 2)
                torn = f.read(1) != b"\n"
            if torn:
                with open(self.path, "a") as f:
                    f.write("\n")

    def __call__(self, event: Event) -> None:
        with open(self.path, "a") as f:
            f.write(event.to_json() + "\n")


class Cancelled(UdaError):
    """A job stopped because it was asked to; what it saved is kept."""


def check_stop(should_stop: StopFlag | None, what: str, hint: str = "") -> None:
    """Raise :class:`Cancelled` (``"<what> cancelled[; <hint>]"``) if ``should_stop`` says so."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled" + (f"; {hint}" if hint else ""))
