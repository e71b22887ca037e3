"""Bringing objects to one size: each training image rescaled to a target diameter."""

from __future__ import annotations

import numpy as np

from ..engine.size import equivalent_diameters, weighted_median
from .augment import resample
from .data import Pair, TargetMaker

# Rescaling is kept within these factors (an image is never blown up or shrunk further).
MIN_FACTOR, MAX_FACTOR = 0.1, 10.0


def object_diameter(labels_list: list[np.ndarray]) -> float | None:
    """Typical object diameter over all label images (None without objects).

    The area-weighted median equivalent diameter (:func:`typical_diameter`), the same
    statistic that :func:`~napari_segnet.estimate_diameter` measures on new images.
    """
    labs = [np.asarray(lab).astype(np.int32) for lab in labels_list]
    labs = [lab for lab in labs if lab.any()]
    if not labs:
        return None
    d = np.concatenate([equivalent_diameters(lab) for lab in labs])
    return weighted_median(d, d ** labs[0].ndim)


def rescale_pair(pair: Pair, factor: float, make_target: TargetMaker) -> Pair:
    """``pair`` resampled by ``factor`` on every spatial axis, its target remade.

    The image is resampled linearly (smoothed first when shrunk), the labels by
    nearest neighbour; class map and weights are made from the new labels.
    """
    shape = tuple(max(1, round(n * factor)) for n in pair.labels.shape)
    image = np.stack([resample(c, shape, 1, smooth=True) for c in pair.image]).astype(np.float32)
    labels = resample(pair.labels, shape, 0)
    target, weight = make_target(labels)
    return Pair(image, target, weight, labels, pair.source, pair.index, pair.start)


def rescale_to_diameter(
    pairs: list[Pair], diameter: float, make_target: TargetMaker
) -> tuple[list[Pair], list[float]]:
    """Rescale each image's pairs so its median object diameter becomes ``diameter``.

    Parameters
    ----------
    pairs : list of Pair
        Pairs with instance labels (an image's slices share one factor).
    diameter : float
        The object diameter wanted, in pixels.
    make_target : callable
        Makes class map and weights of a label image.

    Returns
    -------
    pairs : list of Pair
        New pairs (the given ones are not modified); images without objects are
        kept as they are.
    diameters : list of float
        The median object diameter each image (with objects) had before.
    """
    by_source: dict[int, list[np.ndarray]] = {}
    for p in pairs:
        by_source.setdefault(p.source, []).append(p.labels)
    factors: dict[int, float] = {}
    diameters: list[float] = []
    for src, labels in by_source.items():
        d = object_diameter(labels)
        if d is None:
            continue
        diameters.append(d)
        factors[src] = float(np.clip(diameter / d, MIN_FACTOR, MAX_FACTOR))
    out = [
        p
        if abs(factors.get(p.source, 1.0) - 1.0) < 0.02
        else rescale_pair(p, factors[p.source], make_target)
        for p in pairs
    ]
    return out, diameters
