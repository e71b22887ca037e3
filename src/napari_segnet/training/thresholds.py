"""Instance-labelling thresholds chosen on validation data after training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics import average_precision
from ..postprocess.instances import label_instances

# Candidate seed (interior) and foreground thresholds for ``label_instances``.
INTERIOR_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
FOREGROUND_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# Fewer validation objects than this say too little to move the thresholds.
MIN_OBJECTS = 8
# Validation pixels used for the fit at most (the rest is left out), which bounds its time.
MAX_PIXELS = 2**20
_IOUS = np.arange(0.5, 0.95, 0.05)


def tune_instance_options(
    probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], ndim: int = 2
) -> dict | None:
    """The seed and foreground thresholds that label validation data best.

    The foreground threshold is chosen first (from :data:`FOREGROUND_THRESHOLDS`, with
    the seed threshold at 0.5), then the seed threshold (from
    :data:`INTERIOR_THRESHOLDS`): each candidate labels every validation map with
    :func:`~napari_segnet.label_instances` (boundary mode), the highest mean AP@0.5
    wins, ties going to the higher AP averaged over IoU 0.5-0.9 and then to the value
    nearest 0.5. A network's confidence differs from one dataset to the next (dim,
    unannotated objects are the usual false positives), so thresholds fitted on
    held-out annotations transfer better than fixed ones (StarDist fits its
    thresholds on validation data the same way).

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        ``(3, *spatial)`` background / interior / boundary probabilities per image.
    labels : sequence of numpy.ndarray
        The matching instance labels.
    ndim : int
        Spatial dimensions.

    Returns
    -------
    dict or None
        ``{"interior_threshold": ..., "foreground_threshold": ...}``, or None when the
        labels hold fewer than :data:`MIN_OBJECTS` objects.
    """
    n_objects = sum(len(np.unique(lab)) - 1 for lab in labels)
    if n_objects < MIN_OBJECTS:
        return None

    def key(interior: float, foreground: float) -> tuple[float, float]:
        aps = np.array(
            [
                average_precision(
                    lab,
                    label_instances(
                        prob,
                        mode="boundary",
                        ndim=ndim,
                        interior_threshold=interior,
                        foreground_threshold=foreground,
                    ),
                    _IOUS,
                )
                for prob, lab in zip(probabilities, labels)
            ]
        )
        return aps[:, 0].mean(), aps.mean()

    def best(candidates: Sequence[float], score) -> float:
        return max(candidates, key=lambda v: (*score(v), -abs(v - 0.5)))

    foreground = best(FOREGROUND_THRESHOLDS, lambda v: key(0.5, v))
    interior = best(INTERIOR_THRESHOLDS, lambda v: key(v, foreground))
    return {"interior_threshold": interior, "foreground_threshold": foreground}
