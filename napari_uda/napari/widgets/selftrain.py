"""Dock widget: start self-training rounds with a budget, watch them, and compare rounds (accepted
cases, mean case score, uncertainty across rounds, and DSC/NSD where evaluation labels exist).

A round runs ``napari-uda selftrain`` in a child process (Cancel terminates its process tree;
Start again resumes), serially or, given a Dask scheduler, with its prediction and scoring as
tasks on that cluster (progress per task). Automatic acceptance is a checkbox that is off by default; its selection rule (FLARE 2025's
filters, FLARE 2024's fold consistency, ASIT's uncertainty across rounds) a choice. Test-time mirroring and
FLARE 2025's coarse-to-fine (with the crops' margin) are checkboxes for the rounds to come. ASIT's label
transfer brings the pseudo-labels of the same patients' scans in another sub-domain into the review queue,
marked as transferred: once from folders (in a thread: registration, no model), or before each round from
the final labels of that sub-domain's workspace (multi-domain matching, ``--transfer-from``, recorded).
"""
from __future__ import annotations

import os
import sys
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from napari_uda.core.child import run_child
from napari_uda.core.choices import ACCEPT_RULES, BUDGETS, CROP_MARGIN_MM, PAIRINGS
from napari_uda.core.device import available_devices
from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Progress, StopFlag
from napari_uda.core.workspace import Workspace
from napari_uda.napari.widgets._common import PathField, SchedulerField, fill_table, notify_error
from napari_uda.napari.widgets._jobs import JobPanel
from napari_uda.napari.widgets._session import link_for
from napari_uda.pipeline.summary import compare_rounds
from napari_uda.pipeline.transfer import TransferFrom, transfer_from_folders
from napari_uda.pipeline.workflow import evaluate_stages, round_stages


def selftrain_command(ws: Workspace, rounds: int, budget: str, auto: bool, device: str,
                      scheduler: str | None = None, select: str | None = None, tta: bool | None = None,
                      coarse_to_fine: bool | None = None, margin_mm: float = CROP_MARGIN_MM,
                      transfer: TransferFrom | None = None) -> list[str]:
    """The command line the widget runs, reporting progress as JSON lines (``--log-json``); with a Dask
    ``scheduler`` (``local``, an address or a scheduler file) prediction and scoring run on its cluster;
    ``select``: the selection rule (``ACCEPT_RULES``; None: the budget's); ``tta``: test-time
    mirroring for the rounds, ``coarse_to_fine``: coarse and fine models (crops with ``margin_mm``)
    for the rounds, ``transfer``: the workspace whose final labels are transferred into the queue
    before each round (its ``workspace`` None: none; None: each as the workspace recorded)."""
    return ([sys.executable, "-m", "napari_uda.cli", "--log-json", "selftrain", "--workspace", str(ws.root),
             "--rounds", str(rounds), "--budget", budget, "--device", device] + (["--auto-accept"] if auto else [])
            + (["--select", select] if select else []) + ([] if tta is None else ["--tta" if tta else "--no-tta"])
            + ([] if coarse_to_fine is None else
               ["--coarse-to-fine", "--margin-mm", f"{margin_mm:g}"] if coarse_to_fine else ["--no-coarse-to-fine"])
            + _transfer_args(transfer) + (["--scheduler", scheduler] if scheduler else []))


def _transfer_args(transfer: TransferFrom | None) -> list[str]:
    if transfer is None:
        return []
    if transfer.workspace is None:
        return ["--no-transfer"]
    return (["--transfer-from", transfer.workspace, "--pair-by", transfer.pair_by]
            + (["--patient", transfer.patient] if transfer.patient else []))


BUDGET_RULE = "the budget's rule"


class SelfTrainingWidget(QWidget):
    """Self-training rounds: start, watch, compare."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.link = link_for(napari_viewer)
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 20)
        self.budget = QComboBox()
        self.budget.addItems(list(BUDGETS))
        self.budget.setCurrentText("small")
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.auto = QCheckBox("accept the better half automatically, by the selection rule (recorded as auto:<settings>)")
        self.auto.setChecked(False)
        self.select = QComboBox()
        self.select.addItems([BUDGET_RULE, *ACCEPT_RULES])
        self.select.setToolTip("filters: FLARE 2025; consistency: FLARE 2024; uncertainty: ASIT, the lowest uncertainty "
                               "across rounds with the union of the rounds' labels (from round 2; round 1 by consistency)")
        self.tta = QCheckBox("test-time mirroring (the rounds' segmenters then train with mirroring augmentation too)")
        self.coarse_to_fine = QCheckBox("coarse-to-fine: a coarse model finds the organs, a fine one trained on crops "
                                        "segments them (FLARE 2025)")
        self.margin = QDoubleSpinBox()
        self.margin.setRange(0.0, 200.0)
        self.margin.setSuffix(" mm")
        self.margin.setValue(CROP_MARGIN_MM)
        self.margin.setToolTip("the margin around the organs of the fine model's crops")
        self.scheduler = SchedulerField()
        start = QPushButton("Start rounds")
        start.clicked.connect(self.start_clicked)
        self.other_workspace = PathField("the workspace of the same patients' scans in another sub-domain")
        self.transfer_rounds = QCheckBox("transfer its final labels into the queue before each round "
                                         "(ASIT's multi-domain matching)")
        self.other_scans = PathField("the same patients' scans in another sub-domain (e.g. T1 phases)")
        self.other_labels = PathField("their labels or pseudo-labels (same file names)")
        self.pair_by = QComboBox()
        self.pair_by.addItems(PAIRINGS)
        self.pair_by.setToolTip("name: a scan and a target of one patient share its name; volume: the names differ, "
                                "each target is paired with the most alike scan in Sobel space (ASIT)")
        self.patient = QLineEdit()
        self.patient.setPlaceholderText("the case name; or a regular expression, e.g. ^(patient_[0-9]+)")
        self.pair_by.currentTextChanged.connect(lambda how: self.patient.setEnabled(how == "name"))
        transfer = QPushButton("Transfer their labels into the review queue")
        transfer.clicked.connect(self.transfer_clicked)
        self.labels = PathField("target labels for evaluation only (optional)")
        evaluate = QPushButton("Evaluate every stage")
        evaluate.clicked.connect(self.evaluate_clicked)
        form = QFormLayout()
        form.addRow("Rounds (in all)", self.rounds)
        form.addRow("Budget", self.budget)
        form.addRow("Device", self.device)
        form.addRow("Dask scheduler", self.scheduler)
        form.addRow(self.auto)
        form.addRow("Selection", self.select)
        form.addRow(self.tta)
        form.addRow(self.coarse_to_fine)
        form.addRow("Crop margin", self.margin)
        form.addRow("Pair scans by", self.pair_by)
        form.addRow("Patient of a scan", self.patient)
        form.addRow("Other sub-domain's workspace", self.other_workspace)
        form.addRow(self.transfer_rounds)
        form.addRow(start)
        form.addRow("Other sub-domain's scans", self.other_scans)
        form.addRow("Their labels", self.other_labels)
        form.addRow(transfer)
        form.addRow("Evaluation labels", self.labels)
        form.addRow(evaluate)
        self.job = JobPanel()
        self.table = QTableWidget()
        self.table.setMinimumHeight(140)
        self.table.setSortingEnabled(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.job)
        layout.addWidget(self.table, 1)
        self.link.changed.connect(lambda _: self.refresh())
        if self.link.path is not None:
            self.refresh()

    def selection(self) -> str | None:
        """The chosen selection rule; None: the budget's."""
        return None if self.select.currentText() == BUDGET_RULE else self.select.currentText()

    def refresh(self) -> None:
        try:
            ws = self.link.open()
            pipeline = ws.pipeline()
            if pipeline and ws.stage(pipeline.base_stage):
                self.rounds.setValue(max(1, len(round_stages(ws))))  # the next round
            self.tta.setChecked(bool(pipeline and pipeline.tta))
            self.coarse_to_fine.setChecked(bool(pipeline and pipeline.crop_margin_mm is not None))
            if pipeline and pipeline.crop_margin_mm is not None:
                self.margin.setValue(pipeline.crop_margin_mm)
            self.transfer_rounds.setChecked(bool(pipeline and pipeline.transfer_from))
            if pipeline and pipeline.transfer_from:
                self.other_workspace.set_path(pipeline.transfer_from)
                self.pair_by.setCurrentText(pipeline.transfer_pair_by)
                self.patient.setText(pipeline.transfer_patient or "")
            header, rows = compare_rounds(ws)
        except UdaError as exc:
            notify_error(exc)
            return
        fill_table(self.table, header, rows)

    def start_clicked(self) -> None:
        try:
            ws = self.link.open()
            cmd = selftrain_command(ws, self.rounds.value(), self.budget.currentText(), self.auto.isChecked(),
                                    self.device.currentText(), self.scheduler.scheduler(), self.selection(),
                                    self.tta.isChecked(), self.coarse_to_fine.isChecked(), self.margin.value(),
                                    self.transfer())
        except UdaError as exc:
            notify_error(exc)
            return

        # the child's --log-json events are in its log; Cancel ends its process group (a local cluster's
        # workers with it) and with its client the tasks it had asked a remote scheduler for
        def work(report: Progress, should_stop: StopFlag) -> None:
            run_child(cmd, dict(os.environ), ws.root / "logs" / "selftrain.log", should_stop, report, what="self-training")

        self.job.start("self-training", work, lambda _: self.refresh())

    def pairing(self) -> tuple[str, str | None]:
        """How label transfer pairs scans: (``pair_by``, the patient's regular expression or None)."""
        how = self.pair_by.currentText()
        return how, (self.patient.text().strip() or None) if how == "name" else None

    def transfer(self) -> TransferFrom:
        """The multi-domain matching the rounds run with (checked, else none)."""
        if not self.transfer_rounds.isChecked():
            return TransferFrom(None)
        other = self.other_workspace.path()
        if other is None:
            raise UdaError("choose the other sub-domain's workspace whose final labels the rounds transfer")
        return TransferFrom(str(other.resolve()), *self.pairing())

    def transfer_clicked(self) -> None:
        try:
            ws = self.link.open()
            scans, labels = self.other_scans.path(), self.other_labels.path()
            if scans is None or labels is None:
                raise UdaError("choose the other sub-domain's scans and their labels")
        except UdaError as exc:
            notify_error(exc)
            return
        how, pattern = self.pairing()
        self.job.start("label transfer",
                       lambda report, stop: transfer_from_folders(ws, scans, labels, pattern, report, stop, pair_by=how),
                       lambda _: self.refresh())

    def evaluate_clicked(self) -> None:
        try:
            ws = self.link.open()
            gt = self.labels.path()
            if gt is None:
                raise UdaError("choose the folder of target labels (used for evaluation only)")
        except UdaError as exc:
            notify_error(exc)
            return
        self.job.start("evaluation", lambda report, stop: evaluate_stages(ws, gt, progress=report),
                       lambda _: self.refresh())
