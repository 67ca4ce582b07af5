"""Dock widget: train or load a CT-to-MRI/PET translator and translate the selected CT layer.

Training runs ``napari-uda translate train`` in a child process (Cancel terminates it; the
checkpoint it leaves lets the same Train resume) and shows a live preview (CT slice, translated
slice, organ-attention map) and the loss curves. Translation runs in a thread worker and adds
the translated volume and the attention map as layers with the CT's geometry.

CLI equivalents: ``napari-uda translate train ...`` and ``napari-uda translate apply ...``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_uda.core.child import run_child
from napari_uda.core.choices import BUDGETS, VARIANTS, get_budget
from napari_uda.core.device import available_devices
from napari_uda.core.errors import UdaError
from napari_uda.core.intensity import CT_WINDOW
from napari_uda.core.io import Volume
from napari_uda.core.jobs import Event, within
from napari_uda.core.modalities import SOURCE, TARGETS, get_modality
from napari_uda.core.orientation import to_canonical
from napari_uda.core.records import TranslatorRecord
from napari_uda.core.workspace import Workspace
from napari_uda.napari.widgets._common import (
    ATTENTION_LAYER,
    PathField,
    add_layer,
    layer_tuple,
    layer_volume,
    notify_error,
)
from napari_uda.napari.widgets._jobs import JobPanel
from napari_uda.napari.widgets._plots import CurvePlot, Thumbnail
from napari_uda.napari.widgets._session import link_for
from napari_uda.translate.disentangled import N_STYLE_CLUSTERS
from napari_uda.translate.translator import Translator


def preview_slices(ct: Volume, translated: Volume, attention: Volume | None,
                   styles: Sequence[Volume] = ()) -> dict[str, Any]:
    """The middle axial slice (canonical orientation) of a CT, its translation and attention map,
    and (``styles``, DAR) of its translation in each style cluster's style, as the list ``styles``."""
    def middle(v: Volume) -> np.ndarray:
        a = to_canonical(v).array
        return np.asarray(a[a.shape[0] // 2], np.float32)  # every volume is on the CT's grid

    volumes = {"ct": ct, "translated": translated, **({"attention": attention} if attention is not None else {})}
    slices: dict[str, Any] = {k: middle(v) for k, v in volumes.items()}
    if styles:
        slices["styles"] = [middle(v) for v in styles]
    return slices


def train_command(ws: Workspace, modality: str, variant: str, budget: str, iterations: int, device: str) -> list[str]:
    """The ``napari-uda translate train`` command line for the workspace's data."""
    b = get_budget(budget)
    if get_modality(modality).key != ws.modality:
        raise UdaError(f"this workspace's target scans are {ws.modality}; choose {ws.modality} or another workspace")
    return [sys.executable, "-m", "napari_uda.cli", "translate", "train",
            "--ct-images", str(ws.folder("source_images")), "--ct-labels", str(ws.folder("source_labels")),
            "--target-images", str(ws.folder("target_images")), "--modality", modality, "--variant", variant,
            "--out", str(ws.translator_dir(variant)), "--iterations", str(iterations), "--size", str(b.translator_size),
            "--ngf", str(b.ngf), "--ndf", str(b.ndf), "--blocks", str(b.blocks), "--device", device,
            "--preview-every", str(max(5, iterations // 20)), "--checkpoint-every", str(max(10, iterations // 20))]


class TranslatorWidget(QWidget):
    """Train / load a translator; translate the selected CT layer; preview with attention."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.link = link_for(napari_viewer)
        self.translator: Translator | None = None

        self.modality = QComboBox()
        self.modality.addItems([m.key for m in TARGETS])
        self.variant = QComboBox()
        self.variant.addItems(list(VARIANTS))
        self.variant.setCurrentText("organ-attention")
        self.budget = QComboBox()
        self.budget.addItems(list(BUDGETS))
        self.budget.setCurrentText("small")
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 10_000_000)
        self.budget.currentTextChanged.connect(lambda b: self.iterations.setValue(get_budget(b).translator_iterations))
        self.iterations.setValue(get_budget("small").translator_iterations)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        train = QPushButton("Train (or resume)")
        train.clicked.connect(self.train_clicked)
        self.folder = PathField("translator folder")
        load = QPushButton("Load")
        load.clicked.connect(self.load_clicked)
        form = QFormLayout()
        form.addRow("Target modality", self.modality)
        form.addRow("Variant", self.variant)
        form.addRow("Budget", self.budget)
        form.addRow("Iterations", self.iterations)
        form.addRow("Device", self.device)
        form.addRow(train)
        form.addRow("Translator", self.folder)
        form.addRow(load)

        self.translate_button = QPushButton("Translate selected CT layer")
        self.translate_button.clicked.connect(self.translate_clicked)
        self.grid = QCheckBox("Side by side (grid view)")
        self.grid.toggled.connect(self._grid)

        preview = QGroupBox("Preview: CT, translation, attention")
        self.thumbs = [Thumbnail("CT"), Thumbnail("translated"), Thumbnail("attention")]
        self.style_thumbs = [Thumbnail(f"style {k}") for k in range(N_STYLE_CLUSTERS)]  # DAR: one per style cluster
        self.losses = CurvePlot("losses")
        pv = QVBoxLayout(preview)
        for thumbs in (self.thumbs, self.style_thumbs):
            row = QHBoxLayout()
            for t in thumbs:
                row.addWidget(t)
                t.setVisible(thumbs is self.thumbs)
            pv.addLayout(row)
        pv.addWidget(self.losses)

        self.job = JobPanel()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.translate_button)
        layout.addWidget(self.grid)
        layout.addWidget(self.job)
        layout.addWidget(preview)
        layout.addStretch(1)
        self.variant.currentTextChanged.connect(lambda _: self._follow_workspace())
        self.link.changed.connect(lambda _: self._follow_workspace())
        self._follow_workspace()

    def _grid(self, on: bool) -> None:
        """CT, translation and attention side by side at the same slice (napari's grid shares the dims)."""
        self.viewer.canvas.grid.enabled = on
        self.viewer.reset_view()

    def _follow_workspace(self) -> None:
        if self.link.path is None:
            return
        ws = self.link.open()
        self.modality.setCurrentText(ws.modality)
        self.folder.set_path(ws.translator_dir(self.variant.currentText()))

    # --- training in a child process --------------------------------------------------------------
    def train_clicked(self) -> None:
        try:
            ws = self.link.open()
            cmd = train_command(ws, self.modality.currentText(), self.variant.currentText(), self.budget.currentText(),
                                self.iterations.value(), self.device.currentText())
        except UdaError as exc:
            notify_error(exc)
            return
        variant = self.variant.currentText()
        out = ws.translator_dir(variant)
        self.losses.series.clear()

        def work(report: Any, should_stop: Any) -> Path:
            out.mkdir(parents=True, exist_ok=True)
            run_child(cmd, dict(os.environ), ws.root / "logs" / f"translator_{variant}.log", should_stop,
                      report, out / "progress.jsonl", what=f"translator training ({variant})")
            return out

        def done(folder: Path) -> None:
            self.folder.set_path(folder)
            ws.record(variant, TranslatorRecord(str(folder), self.iterations.value(), trained_by="widget"))
            self.load_clicked()

        self.job.start(f"training {variant}", work, done, self._on_train_event)

    def _on_train_event(self, event: Event) -> None:
        if event.data.get("losses"):
            self.losses.add(event.done, event.data["losses"])
        if event.data.get("preview"):
            with np.load(event.data["preview"]) as z:
                ct, fake, att = z["ct"], z["translated"], z["attention"]
            self.thumbs[0].show_array(ct, -1, 1)
            self.thumbs[1].show_array(fake, -1, 1)
            if att.size:
                self.thumbs[2].show_array(att, 0, 1)

    # --- loading and translating ----------------------------------------------------------------
    def load_clicked(self) -> None:
        """Load the translator folder; the preview shows what it does to a CT in the viewer."""
        if not self._load():
            return
        ct = self._ct_layer()
        if ct is not None and not self.job.running:
            self._translate(ct, add_layers=False)

    def _load(self) -> bool:
        from napari_uda.translate.translator import load_translator

        folder = self.folder.path()
        try:
            if folder is None:
                raise UdaError("choose a translator folder")
            self.translator = load_translator(folder, self.device.currentText())
        except UdaError as exc:
            notify_error(exc)
            return False
        self.job.status.setText(f"loaded {self.translator.config.variant} translator to {self.translator.modality}")
        return True

    def _ct_layer(self) -> Image | None:
        """The selected Image layer, else the first CT Image layer in the viewer."""
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        return next((layer for layer in self.viewer.layers if isinstance(layer, Image)
                     and layer.metadata.get("modality") == SOURCE.key), None)

    def _regions_layer(self, ct: Image) -> Labels | None:
        """For a target-aware (TANQ) translator: the first Labels layer on the CT's grid (its organ
        regions); None (its segmentation decoder finds them) for other translators or without one."""
        if self.translator is None or not self.translator.config.target_aware:
            return None
        return next((layer for layer in self.viewer.layers if isinstance(layer, Labels)
                     and np.shape(layer.data) == np.shape(ct.data)), None)

    def _show_preview(self, slices: dict[str, np.ndarray]) -> None:
        """Show :func:`preview_slices` in the preview panel."""
        self.thumbs[0].show_array(slices["ct"], *CT_WINDOW)
        self.thumbs[1].show_array(slices["translated"], *np.percentile(slices["translated"], [0.5, 99.5]))
        if "attention" in slices:
            self.thumbs[2].show_array(slices["attention"], 0, 1)
        styles = slices.get("styles", [])
        lo, hi = np.percentile(np.stack(styles), [0.5, 99.5]) if styles else (0, 1)
        for k, thumb in enumerate(self.style_thumbs):
            thumb.setVisible(k < len(styles))
            if k < len(styles):
                thumb.show_array(styles[k], lo, hi)

    def translate_clicked(self) -> None:
        layer = self.viewer.layers.selection.active
        if self.translator is None and not self._load():
            return
        if not isinstance(layer, Image):
            notify_error(UdaError("select a CT Image layer to translate"))
            return
        self._translate(layer, add_layers=True)

    def _translate(self, layer: Image, add_layers: bool) -> None:
        """Translate ``layer`` off the UI thread (a TANQ translator by the regions of the Labels layer
        on its grid, if any); show the preview, and add the translation and attention as layers
        when ``add_layers``."""
        from napari_uda.translate.translator import translate_styles, translate_volume

        regions_layer = self._regions_layer(layer)
        try:
            volume = layer_volume(layer)
            regions = layer_volume(regions_layer) if regions_layer is not None else None
        except UdaError as exc:
            notify_error(exc)
            return
        tr, name = self.translator, layer.name
        regions_from = (f" by the organs of {regions_layer.name!r}" if regions_layer is not None
                        else " by the organs its decoder finds" if tr.config.target_aware else "")

        def work(report: Any, should_stop: Any) -> dict[str, Any]:
            styles = (translate_styles(tr, volume, name, should_stop=should_stop, progress=within(report, name))
                      if tr.config.disentangled else [])
            translated, attention = (styles[0], None) if styles else translate_volume(
                tr, volume, should_stop=should_stop, progress=within(report, name), labels=regions)
            layers = []
            if add_layers:
                named = [(v, f"{name} -> {v.modality} style {k}") for k, v in enumerate(styles)]
                for v, title in named or [(translated, f"{name} -> {translated.modality}")]:
                    layers.append(layer_tuple(v, title, as_labels=False))
                if attention is not None:
                    layers.append(layer_tuple(attention, f"{name} attention", as_labels=False, **ATTENTION_LAYER))
            return {"preview": preview_slices(volume, translated, attention, styles), "layers": layers}

        def done(result: dict[str, Any]) -> None:
            self._show_preview(result["preview"])
            for t in result["layers"]:
                add_layer(self.viewer, t)

        self.job.start(f"translating {name}{regions_from}", work, done)
