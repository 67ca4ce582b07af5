"""Dock widget: create or open a workspace and see its manifest (data, translators, models, rounds,
review progress). Reopening the folder in a new session restores all of it.

CLI equivalents: ``napari-uda pipeline --workspace W ...`` creates one, ``napari-uda workspace --workspace W`` shows it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from napari_uda.core.errors import UdaError
from napari_uda.core.modalities import TARGETS
from napari_uda.core.workspace import Workspace
from napari_uda.napari.widgets._common import PathField, fill_table, notify_error
from napari_uda.napari.widgets._session import link_for
from napari_uda.review.store import ReviewStore


class WorkspaceWidget(QWidget):
    """Open or create the viewer's workspace; the other widgets follow it."""

    def __init__(self, napari_viewer: Any, workspace: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.link = link_for(napari_viewer)
        self.folder = PathField("workspace folder")
        open_button = QPushButton("Open")
        open_button.clicked.connect(self.open_clicked)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)

        create = QGroupBox("New workspace")
        self.source_images = PathField("labelled CT images")
        self.source_labels = PathField("CT organ labels (same file names)")
        self.target_images = PathField("unlabelled target scans")
        self.modality = QComboBox()
        self.modality.addItems([m.key for m in TARGETS])
        self.modality.setCurrentText("T2WI")
        create_button = QPushButton("Create")
        create_button.clicked.connect(self.create_clicked)
        form = QFormLayout(create)
        form.addRow("CT images", self.source_images)
        form.addRow("CT labels", self.source_labels)
        form.addRow("Target scans", self.target_images)
        form.addRow("Target modality", self.modality)
        form.addRow(create_button)

        self.table = QTableWidget()
        buttons = QHBoxLayout()
        buttons.addWidget(open_button)
        buttons.addWidget(refresh)
        layout = QVBoxLayout(self)
        layout.addWidget(self.folder)
        layout.addLayout(buttons)
        layout.addWidget(create)
        layout.addWidget(self.table, 1)
        self.link.changed.connect(self._show)
        if workspace is not None:
            self.folder.set_path(workspace)
            self.open_clicked()
        elif self.link.path is not None:
            self.folder.set_path(self.link.path)
            self.refresh()

    def open_clicked(self) -> None:
        try:
            path = self.folder.path()
            if path is None:
                raise UdaError("choose a workspace folder")
            self.link.set(Workspace.open(path))
        except UdaError as exc:
            notify_error(exc)

    def create_clicked(self) -> None:
        try:
            path, fields = self.folder.path(), (self.source_images.path(), self.source_labels.path(), self.target_images.path())
            if path is None or any(f is None for f in fields):
                raise UdaError("a new workspace needs its folder, the CT images and labels and the target scans")
            self.link.set(Workspace.create(path, *fields, self.modality.currentText()))  # type: ignore[misc]
        except UdaError as exc:
            notify_error(exc)

    def refresh(self) -> None:
        try:
            self._show(self.link.open())
        except UdaError as exc:
            notify_error(exc)

    def _show(self, ws: Workspace) -> None:
        self.folder.set_path(ws.root)
        with ReviewStore.for_workspace(ws.root) as store:
            counts = store.state_counts()
        fill_table(self.table, ["what", "state"], [list(row) for row in ws.summary(counts)])
