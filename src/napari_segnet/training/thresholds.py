"""Instance-labelling thresholds chosen on validation data after training."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..instances import label_instances
from ..metrics import average_precision

# Candidate seed (interior) and foreground thresholds for ``label_instances``.
INTERIOR_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
FOREGROUND_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# Fewer validation objects than this say too little to move the thresholds.
MIN_OBJECTS = 8
_IOUS = np.arange(0.5, 0.95, 0.05)


def tune_instance_options(
    probabilities: Sequence[np.ndarray], labels: Sequence[np.ndarray], ndim: int = 2
) -> dict | None:
    """The seed and foreground thresholds that label validation data best.

    Every pair of :data:`INTERIOR_THRESHOLDS` and :data:`FOREGROUND_THRESHOLDS` labels
    each validation map with :func:`~napari_segnet.label_instances` (boundary mode); the
    pair with the highest mean AP@0.5 wins, ties going to the higher AP averaged over
    IoU 0.5-0.9 and then to the pair nearest 0.5/0.5. A network's confidence differs
    from one dataset to the next (dim, unannotated objects are the usual false
    positives), so thresholds fitted on held-out annotations transfer better than
    fixed ones, as StarDist and Cellpose also fit theirs.

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
    best, best_key = None, None
    for interior, foreground in itertools.product(INTERIOR_THRESHOLDS, FOREGROUND_THRESHOLDS):
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
        key = (aps[:, 0].mean(), aps.mean(), -abs(interior - 0.5) - abs(foreground - 0.5))
        if best_key is None or key > best_key:
            best, best_key = (interior, foreground), key
    return {"interior_threshold": best[0], "foreground_threshold": best[1]}
