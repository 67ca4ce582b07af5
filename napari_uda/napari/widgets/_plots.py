"""Small painted views (no plotting library): image thumbnails, line curves and bar charts."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy, QWidget

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


def array_to_pixmap(image: np.ndarray, lo: float, hi: float, size: int = 160) -> QPixmap:
    """A 2D array windowed to [lo, hi] as a grey ``size`` x ``size`` pixmap."""
    a = np.clip((np.asarray(image, np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    g = np.ascontiguousarray((a * 255).astype(np.uint8))
    qimage = QImage(g.data, g.shape[1], g.shape[0], g.strides[0], QImage.Format_Grayscale8).copy()
    return QPixmap.fromImage(qimage).scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation)


class Thumbnail(QLabel):
    """A captioned image panel."""

    def __init__(self, caption: str, size: int = 160) -> None:
        super().__init__(caption)
        self.caption, self.size_px = caption, size
        self.setAlignment(Qt.AlignCenter)
        self.setMinimumSize(size, size)

    def show_array(self, image: np.ndarray, lo: float, hi: float) -> None:
        self.setPixmap(array_to_pixmap(image, lo, hi, self.size_px))
        self.setToolTip(self.caption)


def _titled_painter(widget: QWidget, title: str) -> QPainter:
    """A painter on ``widget`` with napari's dark background and the title drawn."""
    p = QPainter(widget)
    p.fillRect(widget.rect(), QColor("#262930"))
    p.setPen(QColor("#d0d0d0"))
    p.drawText(6, 14, title)
    return p


class CurvePlot(QWidget):
    """Named series against x (e.g. losses against iterations), each smoothed and scaled to its own range."""

    def __init__(self, title: str = "") -> None:
        super().__init__()
        self.title = title
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)

    def add(self, x: float, values: Mapping[str, float]) -> None:
        for name, v in values.items():
            self.series.setdefault(name, []).append((float(x), float(v)))
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        p = _titled_painter(self, self.title)
        box = QRectF(6, 20, self.width() - 12, self.height() - 40)
        xs = [x for s in self.series.values() for x, _ in s]
        if len(xs) > 1:
            x0, x1 = min(xs), max(xs) or 1.0
            for i, (name, pts) in enumerate(self.series.items()):
                pts = sorted(dict(pts).items())  # one point per x, in order
                ys = np.array([y for _, y in pts])
                for k in range(1, len(ys)):  # exponential moving average: the trend, not the noise
                    ys[k] = 0.8 * ys[k - 1] + 0.2 * ys[k]
                pts = [(x, y) for (x, _), y in zip(pts, ys)]
                y0, y1 = float(ys.min()), float(ys.max())
                pen = QPen(QColor(PALETTE[i % len(PALETTE)]))
                pen.setWidthF(1.5)
                p.setPen(pen)
                poly = [QPointF(box.left() + box.width() * (x - x0) / max(x1 - x0, 1e-9),
                                box.bottom() - box.height() * (y - y0) / max(y1 - y0, 1e-9)) for x, y in pts]
                for a, b in zip(poly, poly[1:]):
                    p.drawLine(a, b)
                p.drawText(int(box.left() + 90 * i), int(self.height() - 4), name)
        p.end()


class BarChart(QWidget):
    """Labelled bars in [0, 1] (e.g. mean fold consistency per organ)."""

    def __init__(self, title: str = "") -> None:
        super().__init__()
        self.title = title
        self.bars: list[tuple[str, float, QColor]] = []
        self.setMinimumHeight(160)

    def set_bars(self, names: Sequence[str], values: Sequence[float], colors: Sequence[QColor]) -> None:
        self.bars = list(zip(names, values, colors))
        self.setMinimumHeight(28 + 16 * len(self.bars))
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        p = _titled_painter(self, self.title)
        if self.bars:
            label_w, top = 130, 22
            row_h = max(8.0, (self.height() - top - 4) / len(self.bars))
            for i, (name, value, color) in enumerate(self.bars):
                y = top + i * row_h
                p.setPen(QColor("#d0d0d0"))
                p.drawText(QRectF(4, y, label_w - 8, row_h), Qt.AlignRight | Qt.AlignVCenter, name)
                width = (self.width() - label_w - 50) * (0.0 if np.isnan(value) else float(np.clip(value, 0, 1)))
                p.fillRect(QRectF(label_w, y + 2, width, row_h - 4), color)
                p.drawText(QRectF(label_w + width + 4, y, 46, row_h), Qt.AlignLeft | Qt.AlignVCenter,
                           "-" if np.isnan(value) else f"{value:.2f}")
        p.end()


def score_color(value: float | None) -> QColor:
    """Red (0) through yellow to green (1) for a score; grey when there is none."""
    if value is None or np.isnan(value):
        return QColor("#555555")
    v = float(np.clip(value, 0, 1))
    return QColor.fromHsvF(v / 3, 0.65, 0.85)
