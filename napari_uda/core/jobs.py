"""The protocol every long job follows, in this process or in a child process.

Progress: a job reports events, plain dicts, to a :data:`Progress` callback (a child process
writes the same dicts as JSON lines, :mod:`napari_uda.core.child`); what keys an event has depends
on the job (``iteration``/``total`` for training, ``stage``/``message`` for the pipeline, ...).

Cancellation: a job polls a :data:`StopFlag` and, when it turns true, saves what can be resumed
and raises :class:`Cancelled`: never a normal return. Running the same job again resumes it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari_uda.core.errors import UdaError

Progress = Callable[[dict[str, Any]], None]
StopFlag = Callable[[], bool]


class Cancelled(UdaError):
    """A job stopped because it was asked to; what it saved is kept."""


def check_stop(should_stop: StopFlag | None, what: str, hint: str = "") -> None:
    """Raise :class:`Cancelled` (``"<what> cancelled[; <hint>]"``) if ``should_stop`` says so."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} cancelled" + (f"; {hint}" if hint else ""))
