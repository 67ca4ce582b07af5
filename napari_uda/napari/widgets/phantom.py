"""Dock widget: make synthetic abdominal patients (CT / MRI / PET) as layers, off the UI thread.

CLI equivalent: ``napari-uda phantom``.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QPushButton, QSpinBox, QWidget

from napari_uda.core.jobs import Progress, StopFlag, check_stop, emit
from napari_uda.core.modalities import get_modality
from napari_uda.data.phantom import DEFAULT_SHAPE, PHANTOM_MODALITIES, case_name, make_case
from napari_uda.napari.layers import volume_to_layer_data
from napari_uda.napari.widgets._common import add_layer_data
from napari_uda.napari.widgets._jobs import JobPanel


def phantom_layers(modality: str, case: int, seed: int, shape: tuple[int, int, int], with_labels: bool,
                   report: Progress | None = None, should_stop: StopFlag | None = None) -> list[tuple]:
    """Layer data tuples of one synthetic patient (image, and its organ labels if ``with_labels``)."""
    name = case_name(get_modality(modality), case)
    emit(report, "phantom", f"painting {name}", 0, 1, "cases")
    image, labels = make_case(modality, case, seed, shape)
    check_stop(should_stop, "phantom generation")
    out = [volume_to_layer_data(image, f"{name} (seed {seed})", as_labels=False)]
    if with_labels:
        out.append(volume_to_layer_data(labels, f"{name} organs (seed {seed})", as_labels=True))
    emit(report, "phantom", name, 1, 1, "cases")
    return out


class PhantomWidget(QWidget):
    """Pick a modality, case number, seed and grid; get a synthetic patient as layers."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.modality = QComboBox()
        for m in PHANTOM_MODALITIES:
            self.modality.addItem(f"{m.key} - {m.description}", m.slug)
        self.case = QSpinBox(maximum=9999)
        self.seed = QSpinBox(maximum=2**31 - 1)
        self.shape = [QSpinBox(minimum=8, maximum=512, value=v) for v in DEFAULT_SHAPE]
        self.with_labels = QCheckBox("add organ labels (for targets: evaluation only)")
        self.with_labels.setChecked(True)
        self.button = QPushButton("Generate")
        self.button.clicked.connect(self.generate)
        self.job = JobPanel()
        form = QFormLayout(self)
        form.addRow("modality", self.modality)
        form.addRow("case", self.case)
        form.addRow("seed", self.seed)
        for axis, box in zip("zyx", self.shape):
            form.addRow(f"voxels {axis}", box)
        form.addRow(self.with_labels)
        form.addRow(self.button)
        form.addRow(self.job)

    def generate(self) -> Any:
        """Start generation off the UI thread; layers are added when it returns. Returns the worker."""
        args = (self.modality.currentData(), self.case.value(), self.seed.value(),
                tuple(b.value() for b in self.shape), self.with_labels.isChecked())
        worker = self.job.start("phantom", lambda report, stop: phantom_layers(*args, report, stop),
                                lambda layers: add_layer_data(self.viewer, layers))
        if worker is not None:
            self.button.setEnabled(False)
            worker.finished.connect(lambda: self.button.setEnabled(True))
        return worker
