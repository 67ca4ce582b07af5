"""Dock widget: geometry, intensity statistics and organ volumes of the selected layer.

CLI equivalent: ``napari-uda info FILE``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from napari_uda.core.io import format_info, volume_info
from napari_uda.core.organs import ORGANS
from napari_uda.evaluate.metrics import organ_volumes_ml
from napari_uda.napari.widgets._common import layer_volume


def describe_layer(layer: Any) -> str:
    """The text shown for ``layer``: geometry and statistics, plus organ volumes for Labels."""
    data = np.asarray(layer.data)
    if data.ndim != 3:
        return f"{layer.name}: {data.ndim}D layer; geometry is shown for 3D volumes"
    volume = layer_volume(layer)
    text = format_info(layer.metadata.get("source", layer.name), volume_info(volume))
    if isinstance(layer, Labels):
        vols = organ_volumes_ml(data, volume.spacing)
        rows = [f"  {o.index:>2} {o.name:<22} {vols[o.index]:9.1f} mL" for o in ORGANS]
        text += "\norgan volumes:\n" + "\n".join(rows)
    return text


class VolumeInfoWidget(QWidget):
    """Shows what ``napari-uda info`` prints, for whichever layer is selected."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.title = QLabel("Select an image or labels layer")
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setFont(QFont("monospace"))
        self.text.setLineWrapMode(QPlainTextEdit.NoWrap)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.text)
        napari_viewer.layers.selection.events.active.connect(self._on_active)
        self._on_active()

    def _on_active(self, event: Any = None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is None:
            self.title.setText("Select an image or labels layer")
            self.text.setPlainText("")
            return
        self.title.setText(f"Layer: {layer.name}")
        self.text.setPlainText(describe_layer(layer))
