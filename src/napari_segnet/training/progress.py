"""Progress of a training run: the updates callers receive and the time budget."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .thresholds import MAX_PIXELS


@dataclass
class TrainingUpdate:
    """What ``progress`` receives after every step and after every epoch.

    Attributes
    ----------
    kind : str
        ``"step"``, ``"epoch"`` (validation done) or ``"done"``.
    epoch, step : int
        Current epoch (from 1) and global step (from 1).
    epochs : int or None
        Planned epochs, None when the run is bounded by time only.
    loss : float
        Training loss of the last step (``"step"``) or the epoch's mean.
    score : float or None
        Validation score of the epoch (mean IoU, or AP@0.5 for instances).
    best_score : float or None
        Best validation score so far.
    elapsed : float
        Seconds since training started.
    fraction : float
        How far along the run is (0..1), from epochs or from ``max_time``.
    model : SegNet or None
        On ``"epoch"`` updates, the network being trained, for previews: read it
        (``predict`` works on a private copy), do not change it.
    """

    kind: str
    epoch: int
    step: int
    epochs: int | None
    loss: float
    score: float | None
    best_score: float | None
    elapsed: float
    fraction: float
    model: Any = None


class Budget:
    """How far a run is, in steps (when bounded by epochs) and in time (``max_time``).

    Parameters
    ----------
    start : float
        ``time.perf_counter()`` when :func:`train` was called: ``max_time`` counts
        from there, preparation included.
    epochs : int or None
        Planned epochs.
    steps_per_epoch : int
        Optimisation steps per epoch.
    max_time : float or None
        Seconds the whole run may take.
    """

    def __init__(
        self, start: float, epochs: int | None, steps_per_epoch: int, max_time: float | None
    ) -> None:
        self.start = start
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.max_time = max_time
        # Seconds the optimisation may use: less than max_time once the threshold
        # fitting after the loop has been given its share.
        self.seconds = max_time

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def fraction(self, step: int) -> float:
        """How far along the run is (0..1) after ``step`` steps."""
        parts = []
        if self.epochs is not None:
            parts.append(step / (self.epochs * self.steps_per_epoch))
        if self.seconds is not None:
            parts.append(self.elapsed() / self.seconds)
        return min(max(parts), 1.0)

    def out_of_time(self) -> bool:
        """Whether the optimisation has used its seconds."""
        return self.seconds is not None and self.elapsed() >= self.seconds

    def reserve_for_tuning(self, validation_seconds: float, validation_pixels: int) -> None:
        """Keep time after the loop for fitting the instance thresholds.

        The fit is a prediction and about a dozen labellings of (at most
        :data:`MAX_PIXELS` of) the validation data, timed from one validation pass;
        it never takes more than half of ``max_time``.
        """
        if self.max_time is None:
            return
        share = min(1.0, MAX_PIXELS / validation_pixels)
        reserve = 12 * share * validation_seconds
        self.seconds = max(self.max_time - reserve, 0.5 * self.max_time)
