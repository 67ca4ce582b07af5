"""Small helpers shared by the dock widgets."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QTableWidget, QTableWidgetItem, QWidget

from napari_uda.cluster.engine import check_scheduler
from napari_uda.core.errors import UdaError
from napari_uda.core.io import Volume
from napari_uda.napari.layers import geometry_from_layer_meta, volume_to_layer_data
from napari_uda.segment.ensemble import fold_disagreement


def notify_error(exc: BaseException) -> None:
    """Show an error as a napari notification: the message alone for user errors, type and message otherwise."""
    if isinstance(exc, UdaError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


def add_layer_data(viewer: Any, layer_data: list[tuple]) -> list[Any]:
    """Add napari layer data tuples to ``viewer`` and return the new layers."""
    added = []
    for data, kwargs, kind in layer_data:
        added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added


class PathField(QWidget):
    """A line edit with a Browse button for a folder (or a file)."""

    def __init__(self, placeholder: str = "", folder: bool = True) -> None:
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self._folder = folder
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)

    def _browse(self) -> None:
        if self._folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.edit.text())
        else:
            path = QFileDialog.getOpenFileName(self, "Choose a file", self.edit.text())[0]
        if path:
            self.edit.setText(path)

    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: str | Path) -> None:
        self.edit.setText(str(path))


class SchedulerField(QLineEdit):
    """Where a widget's batch work runs: empty for serially in this process, else a Dask scheduler
    (``local``, ``tcp://HOST:8786`` or a ``scheduler.json`` file)."""

    def __init__(self) -> None:
        super().__init__()
        self.setPlaceholderText("this machine, serially; or local, tcp://HOST:8786, scheduler.json")

    def scheduler(self) -> str | None:
        """The scheduler typed in (None: serially); a one-line :class:`UdaError` for anything else."""
        text = self.text().strip() or None
        check_scheduler(text, None)
        return text


def fill_table(table: QTableWidget, header: list[str], rows: list[list[Any]]) -> None:
    """Replace a table's contents (sorting switched off while filling, as Qt requires); a NaN (not
    measured) is an empty cell that says so in its tooltip, floats show 3 decimals."""
    sorting = table.isSortingEnabled()
    table.setSortingEnabled(False)
    table.clear()
    table.setColumnCount(len(header))
    table.setHorizontalHeaderLabels(header)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            item = QTableWidgetItem()
            if isinstance(value, float) and np.isnan(value):
                item.setToolTip("not measured")
            elif isinstance(value, float):
                item.setData(Qt.DisplayRole, round(value, 3))
            else:
                item.setData(Qt.DisplayRole, value if isinstance(value, int) else str(value))
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            table.setItem(r, c, item)
    table.resizeColumnsToContents()
    table.setSortingEnabled(sorting)


def layer_volume(layer: Any) -> Volume:
    """A layer's data with the geometry it came with (or its scale and translate) and its modality."""
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise UdaError(f"layer {layer.name!r} is {data.ndim}D; napari-uda works on 3D volumes")
    meta = {"metadata": layer.metadata, "scale": layer.scale, "translate": layer.translate}
    return Volume(data, geometry_from_layer_meta(meta), layer.metadata.get("modality"))


#: How an organ-attention map goes over its translation: additive and faint, since the map is near 1 over the
#: whole body and at 0.6 it washed the translation under it out (looked at in the demo's screenshot).
ATTENTION_LAYER = {"colormap": "magma", "contrast_limits": (0.0, 1.0), "opacity": 0.3, "blending": "additive"}


def layer_tuple(volume: Volume, name: str, as_labels: bool | None = None, **overrides: Any) -> tuple:
    """The layer data tuple of ``volume`` (contrast limits computed here: call it in the worker)."""
    data, kwargs, kind = volume_to_layer_data(volume, name, as_labels)
    kwargs.update(overrides)
    return data, kwargs, kind


def disagreement_layer(fold_labels: list[np.ndarray], volume: Volume, name: str) -> tuple:
    """Where the folds' labels (each on ``volume``'s grid) disagree, as a red overlay named ``name``."""
    mask = fold_disagreement(fold_labels).astype(np.uint8)
    return layer_tuple(Volume(mask, volume.geometry), name, as_labels=False, colormap="red", contrast_limits=(0, 1),
                       opacity=0.6, blending="additive")


def add_layer(viewer: Any, layer_data: tuple) -> Any:
    """Add a layer data tuple on the UI thread, replacing a layer of the same name."""
    data, kwargs, kind = layer_data
    if kwargs["name"] in viewer.layers:
        viewer.layers.remove(kwargs["name"])
    return getattr(viewer, f"add_{kind}")(data, **kwargs)
