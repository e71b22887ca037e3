"""The UNet boundary weight map (Ronneberger et al. 2015, eq. 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .. import checks
from ..errors import SegNetError

# The border term is dropped where it is below this, so every value stays within it
# (the definition allows 0.01).
TOLERANCE = 5e-3


def class_balance_weights(labels: np.ndarray) -> np.ndarray:
    """w_c: foreground and background weighted by inverse frequency, the more frequent one 1."""
    fg = labels > 0
    n_fg = int(fg.sum())
    n_bg = fg.size - n_fg
    w = np.ones(labels.shape, np.float32)
    if n_fg == 0 or n_bg == 0:
        return w
    if n_bg >= n_fg:
        w[fg] = n_bg / n_fg
    else:
        w[~fg] = n_fg / n_bg
    return w


def _spacing(spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    s = np.broadcast_to(np.asarray(spacing, float), (ndim,)).copy()
    if (s <= 0).any():
        raise SegNetError("spacing must be positive")
    return s


def two_nearest_distances(
    labels: np.ndarray, reach: float, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each pixel to its nearest and second-nearest objects, up to ``reach``.

    Each object's distance transform is computed only in its bounding box grown by
    ``reach``, so the cost follows the objects' size, not objects × image. Distances
    beyond ``reach`` are reported as ``inf``; inside, they are exact.

    Returns
    -------
    d1, d2 : numpy.ndarray
        float32 arrays shaped like ``labels``.
    """
    sp = _spacing(spacing, labels.ndim)
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    margin = np.ceil(reach / sp).astype(int) + 1
    sampling = None if spacing is None else sp
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        box = tuple(
            slice(max(s.start - m, 0), min(s.stop + m, n))
            for s, m, n in zip(sl, margin, labels.shape)
        )
        outside = labels[box] != lab
        d = ndi.distance_transform_edt(outside, sampling=sampling).astype(np.float32)
        a, b = d1[box], d2[box]
        # Keep the two smallest: since b >= a, the new second is min(b, max(a, d)).
        np.minimum(b, np.maximum(a, d), out=b)
        np.minimum(a, d, out=a)
    return d1, d2


def instance_labels(labels) -> np.ndarray:
    """2D or 3D instance labels as int32 ids (0 = background), checked.

    Integral floats are accepted; ids larger than the number of pixels are
    renumbered (the weight map depends only on which pixels share an object), so
    ids near 2**64 cost no more than small ones.

    Raises
    ------
    SegNetError
        For anything but non-negative integer labels with 2 or 3 axes.
    """
    lab = np.asarray(checks.array(labels, "labels"))
    if lab.ndim not in (2, 3):
        raise SegNetError(f"labels must be 2D or 3D, not {lab.ndim}D (shape {lab.shape})")
    integral = lab.dtype.kind != "f" or (np.isfinite(lab).all() and np.all(np.mod(lab, 1) == 0))
    if not integral:
        raise SegNetError(f"labels must be integers, not {lab.dtype} with fractions or NaN")
    if lab.dtype.kind != "b" and lab.min() < 0:
        raise SegNetError(f"labels must not be negative (the smallest is {lab.min()})")
    if lab.dtype.kind in "bu" and lab.dtype.itemsize < 4:
        return lab.astype(np.int32)
    if lab.dtype.kind in "iu" and lab.max() <= min(lab.size, 2**31 - 1):
        return lab.astype(np.int32, copy=False)
    ids, inverse = np.unique(lab, return_inverse=True)
    # 0 stays background: ids are renumbered from 1 when there is none.
    inverse = inverse.reshape(lab.shape) + (0 if ids[0] == 0 else 1)
    return inverse.astype(np.int32)


def boundary_weight_map(
    labels: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """The UNet weight map w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²)).

    Parameters
    ----------
    labels : numpy.ndarray
        2D or 3D instance labels, 0 = background. Not modified.
    w0 : float
        Weight of the border term.
    sigma : float
        Width (pixels, or the units of ``spacing``) of the border term.
    class_balance : bool
        With True, w_c weights foreground and background by inverse frequency (the
        more frequent class gets 1); with False, w_c is 1.
    spacing : sequence of float, optional
        Pixel size per axis for anisotropic data (default isotropic 1).

    Returns
    -------
    numpy.ndarray
        float32 weights shaped like ``labels``. The border term is added on
        background pixels only and is 0 with fewer than two objects. It is computed
        only where it exceeds 0.005 (objects farther apart cannot contribute more),
        so every value is within 0.005 of the exact formula.
    """
    lab = instance_labels(labels)
    w0 = checks.number("w0", w0, low=0)
    sigma = checks.number("sigma", sigma, low=0, low_open=True)
    class_balance = checks.flag("class_balance", class_balance)
    spacing = checks.spacing(spacing, lab.ndim)
    w = class_balance_weights(lab) if class_balance else np.ones(lab.shape, np.float32)
    if w0 == 0:
        return w
    # (d1 + d2) beyond this makes w0·exp(...) < TOLERANCE; d1 <= d2 so d2 <= reach.
    reach = sigma * math.sqrt(2 * math.log(max(abs(w0), TOLERANCE) / TOLERANCE))
    d1, d2 = two_nearest_distances(lab, reach, spacing)
    both = np.isfinite(d2) & (lab == 0)
    s = d1[both] + d2[both]
    w[both] += (w0 * np.exp(-(s * s) / (2 * sigma * sigma))).astype(np.float32)
    return w
