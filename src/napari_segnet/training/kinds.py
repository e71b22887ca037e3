"""What a labels array looks like: instances, semantic classes or scribbles.

The Train panel proposes the kind it sees and warns when the one chosen looks wrong,
before minutes go into training the wrong model.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# More distinct values than this are instance ids, not classes.
MAX_CLASSES = 20
# Scribbles are thin strokes: most of their pixels touch an unlabelled one.
THIN_FRACTION = 0.5
# Labels are looked at on at most this many pixels (a regular subsample of slices).
MAX_PIXELS = 4_000_000


def _sample(labels: np.ndarray) -> np.ndarray:
    """Whole 2D/3D slices of ``labels``, at most about :data:`MAX_PIXELS` of them."""
    labels = np.asarray(labels)
    if labels.ndim <= 2 or labels.size <= MAX_PIXELS:
        return labels
    flat = labels.reshape(-1, *labels.shape[-2:])
    step = int(np.ceil(labels.size / MAX_PIXELS))
    return flat[::step]


def label_stats(labels: np.ndarray) -> dict:
    """Distinct non-zero values, labelled fraction, and how stroke-like and split they are.

    Returns
    -------
    dict
        ``values`` (distinct non-zero values), ``labelled`` (fraction of non-zero
        pixels), ``thin`` (fraction of labelled pixels next to an unlabelled one, in
        the YX plane) and ``one_piece`` (whether each value is one connected region).
    """
    lab = _sample(labels)
    values = np.unique(lab)
    values = values[values != 0]
    mask = lab != 0
    n = int(mask.sum())
    if n == 0:
        return {"values": 0, "labelled": 0.0, "thin": 0.0, "one_piece": True}
    plane = np.zeros((3,) * lab.ndim, bool)
    plane[(1,) * (lab.ndim - 2) + (slice(None), 1)] = True
    plane[(1,) * (lab.ndim - 2) + (1, slice(None))] = True
    inner = ndi.binary_erosion(mask, structure=plane, border_value=1)
    one_piece = True
    if len(values) <= MAX_CLASSES:
        for v in values:
            if ndi.label(lab == v)[1] > 1:
                one_piece = False
                break
    return {
        "values": len(values),
        "labelled": n / lab.size,
        "thin": float((mask & ~inner).sum()) / n,
        "one_piece": one_piece,
    }


def guess_target(labels: np.ndarray) -> str:
    """The kind of labels this looks like: ``"instances"``, ``"semantic"`` or ``"scribbles"``.

    Many distinct values, or each value one connected region, are instances; thin
    strokes (most labelled pixels touching unlabelled ones) are scribbles; a few
    values spread over several regions are semantic classes.
    """
    s = label_stats(labels)
    if s["values"] > MAX_CLASSES or (s["one_piece"] and s["values"] > 1):
        return "instances"
    if s["thin"] > THIN_FRACTION:
        return "scribbles"
    return "semantic"


def target_warning(labels: np.ndarray, target: str) -> str | None:
    """Why ``target`` looks wrong for ``labels``, or None when it looks fine."""
    s = label_stats(labels)
    if s["values"] == 0:
        return "the labels layer is empty: paint some labels first"
    if target == "semantic" and s["values"] > MAX_CLASSES:
        return (
            f"{s['values']} distinct values would train a {s['values'] + 1}-class model: "
            "these look like instance ids; choose 'instances'"
        )
    if target == "scribbles" and s["values"] > MAX_CLASSES:
        return f"{s['values']} scribble classes: these look like instance ids"
    guess = guess_target(labels)
    if target != "scribbles" and guess == "scribbles":
        return (
            "these look like scribbles (thin strokes, most pixels unlabelled); as "
            f"'{target}' every unpainted pixel counts as background"
        )
    if target == "scribbles" and guess != "scribbles":
        return (
            f"these look like {guess} labels, not scribbles: as scribbles, unpainted "
            "pixels are ignored and 1 means background"
        )
    return None
