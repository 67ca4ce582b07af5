"""Dock widget: start self-training rounds with a budget, watch them, and compare rounds (accepted
cases, mean case score, uncertainty across rounds, and DSC/NSD where evaluation labels exist).

A round runs ``napari-uda selftrain`` in a child process (Cancel terminates its process tree;
Start again resumes). Automatic acceptance by the filters is a checkbox that is off by default.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QPushButton, QSpinBox, QTableWidget, QVBoxLayout, QWidget

from napari_uda.core.child import run_child
from napari_uda.core.choices import BUDGETS
from napari_uda.core.device import available_devices
from napari_uda.core.errors import UdaError
from napari_uda.core.jobs import Progress, StopFlag
from napari_uda.core.organs import ORGANS
from napari_uda.core.workspace import Workspace
from napari_uda.napari.widgets._common import PathField, fill_table, notify_error
from napari_uda.napari.widgets._jobs import JobPanel
from napari_uda.napari.widgets._session import link_for
from napari_uda.pipeline.workflow import evaluate_stages, round_stages, stage_order
from napari_uda.review.store import ReviewStore


def selftrain_command(ws: Workspace, rounds: int, budget: str, auto: bool, device: str) -> list[str]:
    """The command line the widget runs, reporting progress as JSON lines (``--log-json``)."""
    return [sys.executable, "-m", "napari_uda.cli", "--log-json", "selftrain", "--workspace", str(ws.root),
            "--rounds", str(rounds), "--budget", budget, "--device", device] + (["--auto-accept"] if auto else [])


def compare_rounds(ws: Workspace) -> tuple[list[str], list[list[Any]]]:
    """One row per scored stage: stage, accepted cases used, mean case score, mean uncertainty
    across rounds, mean DSC / NSD from ``W/reports/evaluation_<stage>.json`` when present, then
    each organ's mean fold consistency. Returns (header, rows)."""
    header = ["stage", "accepted cases", "mean case score", "mean uncertainty", "DSC", "NSD"]
    header += [o.name for o in ORGANS]
    rows = []
    with ReviewStore.for_workspace(ws.root) as store:
        rounds = {r["round"]: r for r in store.rounds()}
        for stage in stage_order([s for s, v in ws.manifest["stages"].items() if v.get("model_id") or s == "final"]):
            info = ws.manifest["stages"][stage]
            scores = store.case_scores(info.get("model_id"))
            r = info.get("round", 0)
            unc = list(rounds[r]["uncertainty"].values()) if r in rounds else []
            report = ws.reports_dir / f"evaluation_{stage}.json"
            dsc = nsd = float("nan")
            if report.exists():
                summary = json.loads(report.read_text())["summary"]["all"]
                dsc, nsd = summary["dsc_mean"], summary["nsd_mean"]
            organ = store.mean_organ_consistency(info.get("model_id"))
            rows.append([stage, len(rounds[r]["cases"]) if r in rounds else 0,
                         float(np.mean(scores)) if scores else float("nan"),
                         float(np.mean(unc)) if unc else float("nan"), dsc, nsd]
                        + [float(organ.get(o.index, float("nan"))) for o in ORGANS])
    return header, rows


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
        self.auto = QCheckBox("accept the better half automatically, by the budget's rule (recorded as auto:<settings>)")
        self.auto.setChecked(False)
        start = QPushButton("Start rounds")
        start.clicked.connect(self.start_clicked)
        self.labels = PathField("target labels for evaluation only (optional)")
        evaluate = QPushButton("Evaluate every stage")
        evaluate.clicked.connect(self.evaluate_clicked)
        form = QFormLayout()
        form.addRow("Rounds (in all)", self.rounds)
        form.addRow("Budget", self.budget)
        form.addRow("Device", self.device)
        form.addRow(self.auto)
        form.addRow(start)
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

    def refresh(self) -> None:
        try:
            ws = self.link.open()
            if ws.manifest.get("pipeline") and ws.done("stages", ws.manifest["pipeline"]["base_stage"]):
                self.rounds.setValue(max(1, len(round_stages(ws))))  # the next round
            header, rows = compare_rounds(ws)
        except UdaError as exc:
            notify_error(exc)
            return
        fill_table(self.table, header, rows)

    def start_clicked(self) -> None:
        try:
            ws = self.link.open()
            cmd = selftrain_command(ws, self.rounds.value(), self.budget.currentText(), self.auto.isChecked(),
                                    self.device.currentText())
        except UdaError as exc:
            notify_error(exc)
            return

        def work(report: Progress, should_stop: StopFlag) -> None:  # the child's --log-json events are in its log
            run_child(cmd, dict(os.environ), ws.root / "logs" / "selftrain.log", should_stop, report, what="self-training")

        self.job.start("self-training", work, lambda _: self.refresh())

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
