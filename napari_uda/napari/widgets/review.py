"""Dock widget: review pseudo-labels. The queue of a workspace ranked by case score; each case's
image and fused label (editable with napari's label tools), why the filters flagged it, and
Accept / Reject / Undo with keyboard shortcuts. An accepted label that was edited is recorded as
``edited`` with the reviewer's label. Every decision goes to the review store at once.

Shortcuts (in the napari window): Shift+A accept, Shift+R reject, Shift+U undo, Shift+N next,
Shift+P previous. CLI equivalents: ``napari-uda review queue|decide``.
"""
from __future__ import annotations

import os
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QShortcut,
    QVBoxLayout,
    QWidget,
)

from napari_uda.core.errors import UdaError
from napari_uda.core.io import Geometry, Volume, read_volume
from napari_uda.core.organs import ORGANS
from napari_uda.napari.widgets._common import add_layer, layer_tuple, notify_error
from napari_uda.napari.widgets._jobs import JobPanel
from napari_uda.napari.widgets._session import link_for
from napari_uda.review.store import QueueRow, ReviewStore, label_hash

IMAGE_LAYER, LABEL_LAYER = "review image", "review label"
SHORTCUTS = {"accept": "Shift+A", "reject": "Shift+R", "undo": "Shift+U", "next": "Shift+N", "previous": "Shift+P"}


class ReviewWidget(QWidget):
    """Accept, reject, edit-then-accept and undo pseudo-labels, case by case."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.link = link_for(napari_viewer)
        self.rows: list[QueueRow] = []
        self.current: QueueRow | None = None
        self.loaded_hash: str | None = None
        self.loaded_geometry: Geometry | None = None
        self.reviewer = QLineEdit(os.environ.get("USER", ""))
        self.reviewer.setPlaceholderText("your name (recorded with each decision)")
        self.note = QLineEdit()
        self.note.setPlaceholderText("note (optional)")
        self.queue = QListWidget()
        self.queue.currentRowChanged.connect(self._row_changed)
        self.progress = QLabel("")
        self.reasons = QLabel("")
        self.reasons.setWordWrap(True)
        self.organ = QComboBox()
        self.organ.addItems(["all organs"] + [o.name for o in ORGANS])
        self.organ.currentIndexChanged.connect(self._focus_organ)
        buttons = QHBoxLayout()
        for action, label in (("accept", "Accept"), ("reject", "Reject"), ("undo", "Undo"),
                              ("previous", "Previous"), ("next", "Next")):
            b = QPushButton(f"{label} ({SHORTCUTS[action]})")
            b.clicked.connect(lambda _=False, a=action: self.act(a))
            buttons.addWidget(b)
            shortcut = QShortcut(QKeySequence(SHORTCUTS[action]), self)
            shortcut.setContext(Qt.WindowShortcut)
            shortcut.activated.connect(lambda a=action: self.act(a))
        refresh = QPushButton("Refresh queue")
        refresh.clicked.connect(self.refresh)
        form = QFormLayout()
        form.addRow("Reviewer", self.reviewer)
        form.addRow("Note", self.note)
        form.addRow("Show", self.organ)
        self.job = JobPanel()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(refresh)
        layout.addWidget(self.progress)
        layout.addWidget(self.queue, 1)
        layout.addWidget(QLabel("Filters:"))
        layout.addWidget(self.reasons)
        layout.addLayout(buttons)
        layout.addWidget(self.job)
        self.link.changed.connect(lambda _: self.refresh())
        if self.link.path is not None:
            self.refresh()

    # --- the queue ------------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        try:
            self.rows = self.link.scored_queue()
        except UdaError as exc:
            notify_error(exc)
            return
        stale = [r.state != "not reviewed" and not r.decided_on_latest for r in self.rows]
        self.queue.blockSignals(True)
        self.queue.clear()
        for r, old in zip(self.rows, stale):
            self.queue.addItem(f"{r.case}   score {r.case_score:.3f}   {r.state}{'*' if old else ''}")
        self.queue.blockSignals(False)
        decided = sum(r.state != "not reviewed" for r in self.rows)
        self.progress.setText(f"{decided} of {len(self.rows)} decided"
                              + ("  (* on an earlier round's prediction)" if any(stale) else ""))
        names = [r.case for r in self.rows]
        target = select if select in names else (self.current.case if self.current and self.current.case in names else None)
        if target is None:
            target = next((r.case for r in self.rows if r.state == "not reviewed"), names[0] if names else None)
        if target is not None:
            self.queue.setCurrentRow(names.index(target))

    def _row_changed(self, index: int) -> None:
        if 0 <= index < len(self.rows) and (self.current is None or self.current.case != self.rows[index].case):
            self.load(self.rows[index])

    def load(self, row: QueueRow) -> None:
        self.current = row
        failed = row.failed
        self.reasons.setText("\n".join(failed) or "passed every filter")
        def work(report: Any, should_stop: Any) -> tuple:
            label = read_volume(row.label)
            return (layer_tuple(read_volume(row.image), IMAGE_LAYER, as_labels=False),
                    layer_tuple(label, LABEL_LAYER, as_labels=True), label_hash(label.array), label.geometry)

        self.job.start(f"loading {row.case}", work, lambda result: self._show(row, *result))

    def _show(self, row: QueueRow, image: tuple, label: tuple, digest: str, geometry: Geometry) -> None:
        add_layer(self.viewer, image)
        layer = add_layer(self.viewer, label)
        layer.metadata["case"] = row.case
        self.loaded_hash, self.loaded_geometry = digest, geometry
        self._focus_organ()
        self.viewer.layers.selection.active = layer

    def _focus_organ(self) -> None:
        if LABEL_LAYER in self.viewer.layers:
            layer = self.viewer.layers[LABEL_LAYER]
            index = self.organ.currentIndex()
            layer.show_selected_label = index > 0
            if index > 0:
                layer.selected_label = ORGANS[index - 1].index

    # --- decisions -------------------------------------------------------------------------------
    def act(self, action: str) -> None:
        if action in ("next", "previous"):
            row = self.queue.currentRow() + (1 if action == "next" else -1)
            if 0 <= row < self.queue.count():
                self.queue.setCurrentRow(row)
            return
        try:
            self.decide(action)
        except UdaError as exc:
            notify_error(exc)

    def decide(self, action: str) -> str:
        """Record ``accept`` (``edited`` when the label layer was changed), ``reject`` or ``undo``
        for the current case; returns the action recorded."""
        if self.current is None:
            raise UdaError("no case loaded")
        case = self.current.case
        edited = None
        if action == "accept" and LABEL_LAYER in self.viewer.layers:
            layer = self.viewer.layers[LABEL_LAYER]
            if layer.metadata.get("case") == case and label_hash(layer.data) != self.loaded_hash:
                edited, action = Volume(layer.data.copy(), self.loaded_geometry), "edited"
        with ReviewStore.for_workspace(self.link.open().root) as store:
            store.decide(case, action, self.reviewer.text(), self.note.text(), edited_label=edited)
        self.note.clear()
        next_case = None
        if action != "undo":
            names = [r.case for r in self.rows]
            later = names[names.index(case) + 1:] + names[:names.index(case)]
            next_case = next((c for c in later if next(r for r in self.rows if r.case == c).state == "not reviewed"), case)
        self.refresh(select=next_case or case)
        return action
