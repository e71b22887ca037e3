"""A small live plot of training curves (loss and validation score per epoch)."""

from __future__ import annotations

import itertools

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class CurvePlot(QWidget):
    """Loss (orange, own scale) and validation score (cyan, 0..1) against epochs."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss: list[float] = []
        self.score: list[float | None] = []
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self) -> None:
        self.loss, self.score = [], []
        self.update()

    def add(self, loss: float, score: float | None) -> None:
        self.loss.append(float(loss))
        self.score.append(score)
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h, m = self.width(), self.height(), 8
        p.fillRect(0, 0, w, h, QColor(30, 30, 35))
        p.setPen(QColor(150, 150, 150))
        p.drawText(m, 14, "loss")
        p.setPen(QColor(90, 200, 230))
        p.drawText(m + 40, 14, "validation score")
        n = len(self.loss)
        if n < 1:
            return
        top, bottom = 20, h - m

        def x(i: int) -> float:
            return m + (w - 2 * m) * (i / max(n - 1, 1))

        lo, hi = min(self.loss), max(self.loss)
        span = max(hi - lo, 1e-9)
        pen = QPen(QColor(240, 150, 50))
        pen.setWidth(2)
        p.setPen(pen)
        pts = [
            QPointF(x(i), bottom - (bottom - top) * (v - lo) / span)
            for i, v in enumerate(self.loss)
        ]
        for a, b in itertools.pairwise(pts):
            p.drawLine(a, b)
        pen = QPen(QColor(90, 200, 230))
        pen.setWidth(2)
        p.setPen(pen)
        spts = [
            QPointF(x(i), bottom - (bottom - top) * float(v))
            for i, v in enumerate(self.score)
            if v is not None
        ]
        for a, b in itertools.pairwise(spts):
            p.drawLine(a, b)
        for q in spts[-1:]:
            p.drawEllipse(q, 2.5, 2.5)
        p.setPen(QColor(200, 200, 200))
        last = self.score[-1]
        txt = f"epoch {n}: loss {self.loss[-1]:.3f}" + (
            f", score {last:.3f}" if last is not None else ""
        )
        p.drawText(m, h - m - 2, w - 2 * m, 14, Qt.AlignmentFlag.AlignRight, txt)
