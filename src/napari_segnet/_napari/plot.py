"""A small live plot of training curves: loss (own scale) and validation score (0..1)."""

from __future__ import annotations

import itertools

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFontMetrics, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor(240, 150, 50)
SCORE_COLOR = QColor(90, 200, 230)
TEXT_COLOR = QColor(210, 210, 210)
RIGHT, CENTRE = Qt.AlignmentFlag.AlignRight, Qt.AlignmentFlag.AlignHCenter


def ticks(lo: float, hi: float) -> list[float]:
    """Tick values for ``lo``..``hi``: its ends and middle (one value when they meet)."""
    if hi <= lo:
        return [lo]
    return [lo, (lo + hi) / 2, hi]


class CurvePlot(QWidget):
    """Loss (orange, left axis) and validation score (cyan, right axis 0..1) per epoch.

    The axes carry their values; the legend names only the curves drawn (no score
    line when training has no validation data).
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss: list[float] = []
        self.score: list[float | None] = []
        self.setMinimumHeight(200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self) -> None:
        self.loss, self.score = [], []
        self.update()

    def add(self, loss: float, score: float | None) -> None:
        self.loss.append(float(loss))
        self.score.append(score)
        self.update()

    @property
    def legend(self) -> list[str]:
        """The names of the curves drawn."""
        names = ["loss"] if self.loss else []
        return names + (["validation score"] if any(s is not None for s in self.score) else [])

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = QFontMetrics(p.font())
        lh = fm.height()
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor(30, 30, 35))
        p.setPen(TEXT_COLOR)
        p.drawText(QRectF(0, 2, w, lh), Qt.AlignmentFlag.AlignHCenter, "training curves")
        n = len(self.loss)
        if n < 1:
            p.drawText(QRectF(0, 0, w, h), Qt.AlignmentFlag.AlignCenter, "no epoch yet")
            return
        has_score = "validation score" in self.legend
        left = fm.horizontalAdvance("0.000") + 10
        right = w - (fm.horizontalAdvance("1.0") + 10 if has_score else 10)
        top, bottom = 2 * lh + 6, h - 2 * lh - 4
        lo, hi = min(self.loss), max(self.loss)
        span = max(hi - lo, 1e-9)

        def x(i: int) -> float:
            return left + (right - left) * (i / max(n - 1, 1))

        def y(frac: float) -> float:
            return bottom - (bottom - top) * frac

        # Axes and tick values: loss on the left, score on the right, epochs below.
        p.setPen(QColor(120, 120, 120))
        p.drawLine(QPointF(left, top), QPointF(left, bottom))
        p.drawLine(QPointF(left, bottom), QPointF(right, bottom))
        for v in ticks(lo, hi):
            yy = y((v - lo) / span)
            p.setPen(LOSS_COLOR)
            p.drawText(QRectF(0, yy - lh / 2, left - 4, lh), RIGHT, f"{v:.3f}")
        if has_score:
            for v in (0.0, 0.5, 1.0):
                p.setPen(SCORE_COLOR)
                p.drawText(QRectF(right + 4, y(v) - lh / 2, w - right, lh), 0, f"{v:.1f}")
        p.setPen(TEXT_COLOR)
        for i in sorted({0, (n - 1) // 2, n - 1}):
            label = str(i + 1)
            tw = fm.horizontalAdvance(label)
            p.drawText(QPointF(x(i) - tw / 2, bottom + lh), label)
        p.drawText(QRectF(left, bottom + lh + 2, right - left, lh), CENTRE, "epoch")

        pen = QPen(LOSS_COLOR)
        pen.setWidth(2)
        p.setPen(pen)
        pts = [QPointF(x(i), y((v - lo) / span)) for i, v in enumerate(self.loss)]
        for a, b in itertools.pairwise(pts):
            p.drawLine(a, b)
        for q in pts[-1:]:
            p.drawEllipse(q, 2.5, 2.5)
        spts = [QPointF(x(i), y(float(v))) for i, v in enumerate(self.score) if v is not None]
        pen = QPen(SCORE_COLOR)
        pen.setWidth(2)
        p.setPen(pen)
        for a, b in itertools.pairwise(spts):
            p.drawLine(a, b)
        for q in spts[-1:]:
            p.drawEllipse(q, 2.5, 2.5)

        # Legend: only the curves drawn, with their last values.
        xx = left
        last = {"loss": f"{self.loss[-1]:.3f}"}
        scores = [s for s in self.score if s is not None]
        if scores:
            last["validation score"] = f"{scores[-1]:.3f}"
        for name in self.legend:
            p.setPen(LOSS_COLOR if name == "loss" else SCORE_COLOR)
            text = f"— {name} {last[name]}"
            p.drawText(QPointF(xx, lh + 4 + lh - 4), text)
            xx += fm.horizontalAdvance(text) + 16
