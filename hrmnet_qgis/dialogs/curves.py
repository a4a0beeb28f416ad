"""A small custom-painted chart: training loss and validation F1 against steps.

No charting library is needed (QtCharts is not part of every QGIS install).
"""
from __future__ import annotations

import math
from typing import Optional

from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPainterPath, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

__all__ = ["CurvesWidget"]

LOSS_COLOUR = QColor(31, 119, 180)
F1_COLOUR = QColor(214, 39, 40)


class CurvesWidget(QWidget):
    """Two panels: loss (top, per step) and validation F1 (bottom, 0..1, per validation)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.f1: list[tuple[int, float]] = []
        self.total_steps = 0
        self.setMinimumSize(360, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def clear(self, total_steps: int = 0) -> None:
        self.loss.clear()
        self.f1.clear()
        self.total_steps = total_steps
        self.update()

    def add_loss(self, step: int, value: float) -> None:
        """Training loss at ``step`` (non-finite values are ignored)."""
        if math.isfinite(value):
            self.loss.append((int(step), float(value)))
            self.update()

    def add_f1(self, step: int, value: float) -> None:
        """Validation F1 (0..1) at ``step``."""
        if math.isfinite(value):
            self.f1.append((int(step), float(value)))
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        w, h = self.width(), self.height()
        gap = 8
        top = QRectF(48, 8, max(w - 56, 10), max((h - 3 * gap) / 2 - 12, 10))
        bottom = QRectF(48, top.bottom() + 2 * gap + 12, top.width(), top.height())
        x_max = max([self.total_steps] + [s for s, _ in self.loss] + [s for s, _ in self.f1] + [1])
        ys = [v for _, v in self.loss]
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        self._panel(painter, top, "loss", self.loss, x_max, lo, hi, LOSS_COLOUR)
        self._panel(painter, bottom, "val F1", self.f1, x_max, 0.0, 1.0, F1_COLOUR, dots=True)
        painter.end()

    def _panel(self, painter: QPainter, rect: QRectF, title: str, points: list, x_max: float, lo: float,
               hi: float, colour: QColor, dots: bool = False) -> None:
        text = self.palette().text().color()
        painter.setPen(QPen(QColor(160, 160, 160), 1))
        painter.drawRect(rect)
        painter.setPen(text)
        painter.drawText(QRectF(0, rect.top() - 2, 46, 14), Qt.AlignmentFlag.AlignRight, f"{hi:.3g}")
        painter.drawText(QRectF(0, rect.bottom() - 12, 46, 14), Qt.AlignmentFlag.AlignRight, f"{lo:.3g}")
        label = title + (f"  {points[-1][1]:.4f} @ {points[-1][0]}" if points else "")
        painter.drawText(QRectF(rect.left() + 4, rect.top() + 2, rect.width() - 8, 14), Qt.AlignmentFlag.AlignLeft,
                         label)
        painter.drawText(QRectF(rect.right() - 80, rect.bottom() + 1, 80, 14), Qt.AlignmentFlag.AlignRight,
                         f"step {int(x_max)}")
        if not points:
            return

        def at(step: float, value: float) -> QPointF:
            x = rect.left() + rect.width() * step / x_max
            y = rect.bottom() - rect.height() * (value - lo) / (hi - lo)
            return QPointF(x, y)

        path = QPainterPath(at(*points[0]))
        for step, value in points[1:]:
            path.lineTo(at(step, value))
        painter.setPen(QPen(colour, 1.5))
        painter.drawPath(path)
        if dots:
            painter.setBrush(colour)
            for step, value in points:
                painter.drawEllipse(at(step, value), 2.5, 2.5)
