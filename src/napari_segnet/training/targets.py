"""Training targets: class maps (with an ignore value) and per-pixel loss weights."""

from __future__ import annotations

import numpy as np
from skimage.segmentation import find_boundaries

from ..errors import SegNetError
from ..options import TARGETS
from .weights import boundary_weight_map

__all__ = ["IGNORE", "INSTANCE_CLASSES", "TARGETS", "instance_classes", "make_target"]

IGNORE = -1
INSTANCE_CLASSES = ["background", "interior", "boundary"]


def instance_classes(labels: np.ndarray) -> np.ndarray:
    """Background (0), interior (1) and boundary (2) from instance labels.

    The boundary is each object's own outermost pixels (also where two objects
    touch), so touching objects are separated by a boundary line.
    """
    boundary = find_boundaries(labels, connectivity=1, mode="inner") & (labels > 0)
    out = (labels > 0).astype(np.int64)
    out[boundary] = 2
    return out


def make_target(
    labels: np.ndarray,
    kind: str,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    spacing=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class map (int64, ``-1`` = ignored) and loss weights (float32) for one label image.

    Parameters
    ----------
    labels : numpy.ndarray
        ``"instances"``: instance ids (0 = background). ``"semantic"``: class ids
        (0 = background). ``"scribbles"``: 0 = unlabelled, 1..K = classes 0..K-1.
    kind : str
        One of ``"instances"``, ``"semantic"``, ``"scribbles"``.
    w0, sigma : float
        Boundary weight map parameters (``"instances"`` only).
    spacing : sequence of float, optional
        Pixel size per axis for the weight map.
    """
    if kind not in TARGETS:
        raise SegNetError(f"target must be one of {TARGETS}, not {kind!r}")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "biu":
        if lab.dtype.kind == "f" and np.isfinite(lab).all() and np.all(np.mod(lab, 1) == 0):
            lab = lab.astype(np.int64)
        else:
            raise SegNetError(f"labels must be integer ids, not {lab.dtype}")
    if (lab < 0).any():
        raise SegNetError("labels must not be negative")
    if kind == "instances":
        cls = instance_classes(lab)
        weight = boundary_weight_map(lab, w0=w0, sigma=sigma, class_balance=True, spacing=spacing)
        # The boundary class is a thin line inside the foreground, where the weight
        # map's border term (background only) does not reach: balance it against
        # the interior so touching objects are learnt to be separate.
        n_in, n_bd = int((cls == 1).sum()), int((cls == 2).sum())
        if n_bd:
            weight[cls == 2] *= float(np.clip(n_in / n_bd, 1.0, 5.0))
        return cls, weight.astype(np.float32)
    if kind == "semantic":
        return lab.astype(np.int64), np.ones(lab.shape, np.float32)
    cls = lab.astype(np.int64) - 1  # 0 (unlabelled) becomes IGNORE
    return cls, (cls != IGNORE).astype(np.float32)
