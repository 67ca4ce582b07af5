"""Dock widget: per-organ fold consistency of every scored case (a sortable, colour-scaled table of
cases x organs with case scores and filter outcomes), a per-organ bar chart, and a click on a case
to load its image, fused label and fold-disagreement map.

CLI equivalent: ``napari-uda review queue --workspace W --json``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QAbstractItemView, QLabel, QPushButton, QTableWidget, QVBoxLayout, QWidget

from napari_uda.core.errors import UdaError
from napari_uda.core.io import read_volume
from napari_uda.core.organs import ORGAN_BY_INDEX
from napari_uda.napari.widgets._common import add_layer, disagreement_layer, fill_table, layer_tuple, notify_error
from napari_uda.napari.widgets._jobs import JobPanel
from napari_uda.napari.widgets._plots import BarChart, score_color
from napari_uda.napari.widgets._session import link_for
from napari_uda.review.store import QueueRow
from napari_uda.segment.prediction_folder import PredictionFolder

FIXED_COLUMNS = ["case", "score", "filters", "state"]


def case_layers(row: QueueRow) -> list[tuple]:
    """Layer data tuples of a queue row: image, its pseudo-label and, from the fold labels it was
    voted from, where the folds disagree."""
    case, image, label = row.case, read_volume(row.image), read_volume(row.label)
    folds = list(PredictionFolder.of_label(row.label).fold_labels(case).values())
    layers = [layer_tuple(image, case, as_labels=False), layer_tuple(label, f"{case} fused", as_labels=True)]
    if len(folds) > 1:
        layers.append(disagreement_layer([read_volume(p).array for p in folds], label, f"{case} fold disagreement"))
    return layers


class ConsistencyWidget(QWidget):
    """Cases x organs fold consistency from the review store."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.link = link_for(napari_viewer)
        self.rows: list[QueueRow] = []
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        self.summary = QLabel("")
        self.table = QTableWidget()
        self.table.setMinimumHeight(160)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.cellClicked.connect(self._clicked)
        self.chart = BarChart("mean fold consistency per organ")
        self.job = JobPanel()
        layout = QVBoxLayout(self)
        layout.addWidget(refresh)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 2)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.job)
        self.link.changed.connect(lambda _: self.refresh())
        if self.link.path is not None:
            self.refresh()

    def refresh(self) -> None:
        try:
            self.rows = self.link.scored_queue()
        except UdaError as exc:
            notify_error(exc)
            return
        organs = sorted({o for r in self.rows for o in (r.organ_consistency or {})})
        header = FIXED_COLUMNS + [ORGAN_BY_INDEX[o].name for o in organs]
        table_rows = []
        for r in self.rows:
            failed = r.failed
            table_rows.append([r.case, float(r.case_score), f"{len(failed)} failed" if failed else "passed",
                               r.state] + [r.organ_consistency.get(o, float("nan")) for o in organs])
        fill_table(self.table, header, table_rows)
        for i in range(self.table.rowCount()):  # the reasons, on hover
            case = self.table.item(i, 0).text()
            row = next(r for r in self.rows if r.case == case)
            self.table.item(i, 2).setToolTip("\n".join(f"{f.name}: {f.reason}" for f in row.filters or []))
        for i in range(self.table.rowCount()):
            for j in [1] + list(range(len(FIXED_COLUMNS), len(header))):
                item = self.table.item(i, j)
                item.setBackground(score_color(float(item.data(0))))
        means = [float(np.nanmean([r.organ_consistency.get(o, np.nan) for r in self.rows])) for o in organs]
        self.chart.set_bars([ORGAN_BY_INDEX[o].name for o in organs], means, [score_color(m) for m in means])
        passed = sum(all(f.passed for f in r.filters or []) for r in self.rows)
        self.summary.setText(f"{len(self.rows)} scored case(s), {passed} pass every filter; click a case to load it")

    def _clicked(self, row: int, column: int) -> None:
        case = self.table.item(row, 0).text()
        entry = next(r for r in self.rows if r.case == case)
        self.job.start(f"loading {case}", lambda report, stop: case_layers(entry), self._show)

    def _show(self, layers: list[tuple]) -> None:
        for t in layers:
            add_layer(self.viewer, t)
        self.viewer.reset_view()
