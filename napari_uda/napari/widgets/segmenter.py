"""Dock widget: train nnU-Net folds with a budget or pick trained folds, and segment the selected
image on GPU or CPU into an organ Labels layer (optionally one layer per fold and a
fold-disagreement layer), with running time and GPU memory.

Training runs nnU-Net in child processes supervised by a thread worker (Cancel terminates them;
Train again resumes); inference runs in a thread worker that checks Cancel between folds and cases.
Given a Dask scheduler (``local``, an address or a scheduler file) the folds train in parallel and
prediction and scoring run as tasks on its cluster, with progress per task; Cancel cancels them.
CLI equivalents: ``napari-uda segment export|plan|train|predict`` and ``napari-uda pipeline``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from napari.layers import Image
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_uda.core.choices import BASE_STAGES, BUDGETS, get_budget
from napari_uda.core.device import available_devices
from napari_uda.core.errors import UdaError
from napari_uda.core.files import stem_of
from napari_uda.core.io import Volume, read_volume, write_volume
from napari_uda.core.jobs import Progress, StopFlag
from napari_uda.core.workspace import Workspace
from napari_uda.napari.widgets._common import (
    PathField,
    SchedulerField,
    add_layer,
    disagreement_layer,
    layer_tuple,
    layer_volume,
    notify_error,
)
from napari_uda.napari.widgets._jobs import JobPanel, on_cluster
from napari_uda.napari.widgets._session import link_for
from napari_uda.pipeline.workflow import predict_as_stage, pseudo_label, stage_volume, train_segmenter
from napari_uda.segment.prediction_folder import PredictionFolder

TRAINING_SOURCES = {"translated CT (organ-attention)": "organ-attention", "translated CT (cyclegan)": "cyclegan",
                    "translated CT (asit, Sobel space)": "asit", "translated CT (tanq)": "tanq",
                    "translated CT (dar, every style)": "dar",
                    "raw CT (no adaptation)": None}


def predict_layer_volume(model: Path, volume: Volume, name: str, out: Path, device: str, report: Progress,
                         should_stop: StopFlag, client: Any = None, ws: Workspace | None = None,
                         stage: str | None = None) -> dict[str, Any]:
    """Write ``volume`` to ``out/input``, predict it with every fold of ``model`` (one task per fold
    on ``client``'s cluster if given), or as the workspace ``ws``'s ``stage`` predicts if given
    (test-time mirroring, coarse-to-fine); returns the fused labels, each fold's labels and the
    prediction record (time, GPU memory)."""
    from napari_uda.cluster.predict import predict_folds_on

    path = write_volume(volume, out / "input" / f"{name}.nii.gz")
    if ws is not None and stage is not None:
        (record,) = predict_as_stage(ws, stage, [path], out, device, report, should_stop, client)
    else:
        (record,) = predict_folds_on(client, model, [path], out, None, device, progress=report, should_stop=should_stop)
    folds = sorted(record["folds"], key=int)
    pred = PredictionFolder(out)
    return {"fused": read_volume(pred.fused(name)), "record": record,
            "folds": {f: read_volume(pred.fold_label(f, name)) for f in folds}}


def inference_layers(name: str, result: dict[str, Any], per_fold: bool, disagreement: bool) -> list[tuple]:
    """Layer data tuples of a prediction: organs, optionally each fold and where the folds disagree."""
    fused, folds = result["fused"], result["folds"]
    layers = [layer_tuple(fused, f"{name} organs", as_labels=True)]
    if per_fold:
        layers += [layer_tuple(vol, f"{name} fold {f}", as_labels=True, visible=False) for f, vol in folds.items()]
    if disagreement and len(folds) > 1:
        layers.append(disagreement_layer([v.array for v in folds.values()], fused, f"{name} fold disagreement"))
    return layers


class SegmenterWidget(QWidget):
    """Train or pick nnU-Net folds; segment the selected Image layer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.link = link_for(napari_viewer)
        self.source = QComboBox()
        self.source.addItems(list(TRAINING_SOURCES))
        self.budget = QComboBox()
        self.budget.addItems(list(BUDGETS))
        self.budget.setCurrentText("small")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.scheduler = SchedulerField()
        train = QPushButton("Export and train folds")
        train.clicked.connect(self.train_clicked)
        self.models = QComboBox()
        self.models.currentTextChanged.connect(self._model_chosen)
        self.model = PathField("trained nnU-Net model folder (with fold_k/)")
        self.per_fold = QCheckBox("one layer per fold")
        self.disagreement = QCheckBox("fold-disagreement layer")
        self.disagreement.setChecked(True)
        pseudo = QPushButton("Pseudo-label the workspace's target scans")
        pseudo.setToolTip("every fold predicts every target scan; fold consistency and filters fill the review queue")
        pseudo.clicked.connect(self.pseudo_label_clicked)
        segment = QPushButton("Segment selected image")
        segment.clicked.connect(self.segment_clicked)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Train on", self.source)
        form.addRow("Budget", self.budget)
        form.addRow("Device", self.device)
        form.addRow("Dask scheduler", self.scheduler)
        form.addRow(train)
        form.addRow("Workspace models", self.models)
        form.addRow("Model", self.model)
        form.addRow(pseudo)
        form.addRow(self.per_fold)
        form.addRow(self.disagreement)
        form.addRow(segment)
        self.job = JobPanel()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.job)
        layout.addWidget(self.stats)
        layout.addStretch(1)
        self.link.changed.connect(lambda _: self.refresh_models())
        self.refresh_models()

    def refresh_models(self) -> None:
        if self.link.path is None:
            return
        ws = self.link.open()
        current = self.models.currentText()
        self.models.clear()
        models = ws.models()
        self.models.addItems(list(models))
        if current in models:
            self.models.setCurrentText(current)

    def _model_chosen(self, stage: str) -> None:
        if stage and self.link.path is not None:
            info = self.link.open().model(stage)
            if info:
                self.model.set_path(info.path)

    # --- training -------------------------------------------------------------------------------
    def train_clicked(self) -> None:
        try:
            ws, scheduler = self.link.open(), self.scheduler.scheduler()
        except UdaError as exc:
            notify_error(exc)
            return
        variant = TRAINING_SOURCES[self.source.currentText()]
        stage = BASE_STAGES[variant] if variant else "no_adaptation"
        budget, device = get_budget(self.budget.currentText()), self.device.currentText()

        def work(report: Progress, should_stop: StopFlag, client: Any) -> str:
            return train_segmenter(ws, variant, budget, device, report, should_stop, client)

        def done(stage: str) -> None:
            self.refresh_models()
            self.models.setCurrentText(stage)

        self.job.start(f"training {stage}", on_cluster(scheduler, device, work), done)

    def pseudo_label_clicked(self) -> None:
        stage = self.models.currentText()
        variant = next((v for v, s in BASE_STAGES.items() if s == stage), None)
        try:
            ws, scheduler = self.link.open(), self.scheduler.scheduler()
            if variant is None:
                raise UdaError("pseudo-labels come from a translated-CT model: pick one of the translators")
        except UdaError as exc:
            notify_error(exc)
            return
        budget, device = get_budget(self.budget.currentText()), self.device.currentText()
        self.job.start(f"pseudo-labelling with {stage}",
                       on_cluster(scheduler, device, lambda report, stop, client: pseudo_label(
                           ws, variant, budget, device, progress=report, should_stop=stop, client=client)),
                       lambda rows: self.stats.setText(f"{len(rows)} case(s) scored; "
                                                       f"{sum(r['passed'] for r in rows)} pass every filter"))

    # --- inference ------------------------------------------------------------------------------
    def segment_clicked(self) -> None:
        layer = self.viewer.layers.selection.active
        try:
            model = self.model.path()
            if model is None or not model.is_dir():
                raise UdaError("choose a trained model (workspace models, or a model folder)")
            if not isinstance(layer, Image):
                raise UdaError("select an Image layer to segment")
            scheduler = self.scheduler.scheduler()
            ws = self.link.open() if self.link.path else None
            volume = layer_volume(layer)
            # into the workspace, or a temporary folder: never into the model folder (shared, maybe read-only)
            root = self.link.path / "predictions" / "viewer" if self.link.path else Path(tempfile.mkdtemp(prefix="napari-uda-"))
            out = root / layer.name.replace("/", "_").replace(" ", "_")
        except UdaError as exc:
            notify_error(exc)
            return
        device, name = self.device.currentText(), stem_of(f"{layer.name.replace(' ', '_')}.nii.gz")
        per_fold, disagreement, title = self.per_fold.isChecked(), self.disagreement.isChecked(), layer.name
        stage = self.models.currentText()
        recorded = ws.model(stage) if ws is not None and stage else None

        def work(report: Progress, should_stop: StopFlag, client: Any) -> dict[str, Any]:
            own = recorded is not None and Path(recorded.path) == model  # the stage's model: predict as the stage does
            seen = stage_volume(ws, stage, volume) if own else volume
            result = predict_layer_volume(model, seen, name, out, device, report, should_stop, client,
                                          ws=ws if own else None, stage=stage)
            return {"record": result["record"], "layers": inference_layers(title, result, per_fold, disagreement)}

        self.job.start(f"segmenting {layer.name}", on_cluster(scheduler, device, work), self._show)

    def _show(self, result: dict[str, Any]) -> None:
        for t in result["layers"]:
            add_layer(self.viewer, t)
        per_fold = result["record"]["folds"]
        seconds = sum(r["seconds"] for r in per_fold.values())
        peaks = [r.get("gpu_peak_mb") for r in per_fold.values() if r.get("gpu_peak_mb") is not None]
        self.stats.setText(f"{len(per_fold)} fold(s), {seconds:.1f} s in all"
                           + (f"; GPU memory peak {max(peaks):.0f} MB" if peaks else "; CPU (no GPU memory)"))
