"""Long work off the UI thread: a napari thread worker with a progress bar, a status line and a
working Cancel, and errors shown as napari notifications.

The work is a plain function ``fn(report, should_stop)``, the library's job protocol
(:mod:`napari_uda.core.jobs`): ``report(Event)`` may be called from the worker thread (it is
delivered on the UI thread through a queued Qt signal) and ``should_stop()`` turns true when the
user presses Cancel. Training runs the CLI in a child process inside such a function
(:func:`napari_uda.core.child.run_child`), whose event lines it reports, so Cancel terminates that
process tree.

Nothing animates while a job waits for its first progress event: a busy bar, and napari's activity
indicator (any ``napari.utils.progress``, even a determinate one), repaint the window continuously,
which without a GPU (software OpenGL) takes a whole CPU core from the training it reports on
(``benchmarks/RESULTS.md``). The panel's own determinate bar and status line say what runs.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_uda.core.jobs import Event, Progress, StopFlag
from napari_uda.napari.widgets._common import notify_error

T = TypeVar("T")


def on_cluster(scheduler: str | None, device: str,
               fn: Callable[[Progress, StopFlag, Any], T]) -> Callable[[Progress, StopFlag], T]:
    """A job for :meth:`JobPanel.start` that runs ``fn(report, should_stop, client)`` with a Dask
    client for ``scheduler`` (None: serially, client None). A local cluster starts and shuts down
    with the job; Cancel cancels the cluster's tasks (the library's ``follow`` does)."""
    from napari_uda.cluster.engine import dask_client

    def job(report: Progress, should_stop: StopFlag) -> T:
        with dask_client(scheduler, None, device) as client:
            return fn(report, should_stop, client)

    return job


class _Bridge(QObject):
    event = Signal(object)


class JobPanel(QWidget):
    """Progress bar + status + Cancel for one job at a time: the bar follows the events that count,
    the status line says :meth:`Event.line`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._stop = threading.Event()
        self._bridge = _Bridge()
        self._bridge.event.connect(self._on_event)
        self._listeners: list[Progress] = []
        self.worker: Any = None
        self.last_error: BaseException | None = None
        self._alive = threading.Event()
        self._alive.set()
        # a panel deleted with its viewer while a job runs: stop the job; its end touches no widget
        # (not a method of self: PyQt no longer calls those once the object is being destroyed)
        self.destroyed.connect(lambda *_, stop=self._stop, alive=self._alive: (alive.clear(), stop.set()))

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, name: str, fn: Callable[[Progress, StopFlag], Any],
              on_result: Callable[[Any], None] | None = None, on_event: Progress | None = None) -> Any:
        """Run ``fn`` in a thread worker; ``on_result`` and ``on_event`` are called on the UI thread."""
        if self.running:
            notify_error(RuntimeError(f"{self.status.text()} is still running; cancel it or wait"))
            return None
        self._stop.clear()
        self.last_error = None
        self._listeners = [on_event] if on_event else []
        self.status.setText(f"{name}: starting")
        self.bar.setRange(0, 1)  # determinate from the start: a busy bar repaints the window continuously
        self.bar.setValue(0)
        self.cancel_button.setEnabled(True)
        worker = create_worker(fn, self._bridge.event.emit, self._stop.is_set, _start_thread=False, _ignore_errors=True)
        if on_result is not None:
            worker.returned.connect(on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: self._finish(name))
        self.worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        self._stop.set()
        self.status.setText("cancelling...")

    def _on_event(self, event: Event) -> None:
        if event.counts:
            total, done = int(event.total), int(event.done)
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        self.status.setText(event.line())
        for listener in self._listeners:
            listener(event)

    def _on_error(self, exc: BaseException) -> None:
        self.last_error = exc
        if not self._stop.is_set():  # a cancel the user asked for is not an error to show
            notify_error(exc)

    def _finish(self, name: str) -> None:
        self.worker = None
        if not self._alive.is_set():
            return
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if self.last_error is None and not self._stop.is_set() else 0)
        state = "cancelled" if self._stop.is_set() else ("failed: " + str(self.last_error) if self.last_error else "done")
        self.status.setText(f"{name}: {state}")
        self.cancel_button.setEnabled(False)

