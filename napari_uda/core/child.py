"""Long work in a child process: its own process group (cancel kills the whole tree), output
in a log file, and progress read back as the :class:`~napari_uda.core.jobs.Event` JSON lines it appends
to a file.

The widgets and the CLI run training this way, so the viewer never shares a GIL with a
training loop and the GPU memory of a run is returned when its process exits. A child never
outlives its parent: on Linux it gets SIGTERM when the parent dies (even by SIGKILL), and a child
that calls :func:`die_with_group` then kills its whole process group.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Cancelled, Event, Progress, StopFlag

_PR_SET_PDEATHSIG = 1


def _signal_on_parent_death(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: ask the kernel for SIGTERM when the parent dies (Linux; elsewhere nothing)."""
    def setup() -> None:
        import ctypes
        import sys

        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return setup


def die_with_group() -> None:
    """In a child started by :func:`run_child`: on SIGTERM (cancel, or the parent's death) kill the
    whole process group, so nothing the child started (nnU-Net's worker processes) keeps running."""
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))


def terminate_children_on_sigterm() -> None:
    """In a parent: turn SIGTERM into ``SystemExit(143)``, so the cleanup of :func:`run_child` (kill
    the child's group) runs instead of the process vanishing with its children still at work."""
    def stop(*_: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)


class LineFollower:
    """New complete lines of a growing file (a half-written last line waits for its newline)."""

    def __init__(self, path: str | Path, skip_existing: bool = True) -> None:
        self.path = Path(path)
        self.offset = self.path.stat().st_size if skip_existing and self.path.exists() else 0

    def lines(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        yield from data[:end].decode("utf-8", "replace").splitlines()

    def events(self) -> Iterator[Event]:
        """New lines that are progress events (:meth:`Event.from_json`; other lines are skipped)."""
        for line in self.lines():
            event = Event.from_json(line)
            if event is not None:
                yield event


def run_child(cmd: list[str], env: dict[str, str], log: Path, should_stop: StopFlag | None = None,
              report: Progress | None = None, events: Path | None = None, what: str | None = None) -> None:
    """Run ``cmd`` (described as ``what`` in messages) in its own process group, output to ``log``;
    ``report`` hears the :class:`Event` lines the child appends to ``events`` (default: the log, where
    a command run with ``--log-json`` writes them); cancel terminates the whole group.

    A non-zero exit raises :class:`UdaError` with the end of the log.
    """
    what = what or Path(cmd[0]).name
    log.parent.mkdir(parents=True, exist_ok=True)
    follower = LineFollower(events or log)

    def on_poll() -> None:
        if report is not None:
            for event in follower.events():
                report(event)

    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_signal_on_parent_death(os.getpid()))
        try:
            while proc.poll() is None:
                on_poll()
                if should_stop is not None and should_stop():
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    raise Cancelled(f"{what} cancelled; its log is {log}")
                time.sleep(0.5)
        except BaseException:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        on_poll()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        raise UdaError(f"{what} failed (exit {proc.returncode}); end of {log}:\n" + "\n".join(tail))
