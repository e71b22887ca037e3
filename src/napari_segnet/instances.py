"""From class probabilities to instance labels (each object its own id)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.segmentation import relabel_sequential, watershed

from .errors import SegNetError


def _boundary_instances(
    prob: np.ndarray, interior_threshold: float, foreground_threshold: float, min_size: int
) -> np.ndarray:
    interior, boundary = prob[1], prob[2]
    foreground = (interior + boundary) > foreground_threshold
    seeds = cc_label(interior > interior_threshold, connectivity=1)
    # Grow seeds over the foreground, lowest boundary evidence first.
    lab = watershed(1.0 - interior, seeds, mask=foreground)
    # Objects too small to have a confident interior keep their own id.
    orphan = foreground & (lab == 0)
    if orphan.any():
        extra = cc_label(orphan, connectivity=1)
        lab = np.where(extra > 0, extra + lab.max(), lab)
    return _size_filter(lab, min_size)


def _size_filter(lab: np.ndarray, min_size: int) -> np.ndarray:
    if min_size > 1 and lab.max() > 0:
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size
        small[0] = False
        lab = np.where(small[lab], 0, lab)
    return relabel_sequential(lab)[0].astype(np.int32)


def _component_instances(
    prob: np.ndarray, split_touching: bool, min_distance: int, min_size: int
) -> np.ndarray:
    classes = prob.argmax(0)
    out = np.zeros(classes.shape, np.int32)
    for c in range(1, prob.shape[0]):
        mask = classes == c
        if not mask.any():
            continue
        lab = cc_label(mask, connectivity=1)
        if split_touching:
            dist = ndi.distance_transform_edt(mask)
            peaks = peak_local_max(
                dist, min_distance=min_distance, labels=lab, exclude_border=False
            )
            markers = np.zeros_like(lab)
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            split = watershed(-dist, markers, mask=mask)
            # Components without a peak (rare: flat shapes) stay whole.
            missing = mask & (split == 0)
            if missing.any():
                split = np.where(missing, lab + split.max(), split)
            lab = split
        lab = _size_filter(lab, min_size)
        out = np.where(lab > 0, lab + out.max(), out)
    return out


def label_instances(
    probabilities: np.ndarray,
    *,
    mode: str = "auto",
    ndim: int | None = None,
    interior_threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    min_size: int | None = None,
    split_touching: bool = False,
    min_distance: int = 5,
) -> np.ndarray:
    """Turn class probabilities into instance labels.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(C, *spatial)`` class probabilities, e.g. ``segment(...).probabilities``.
    mode : str
        ``"boundary"``: classes are background / interior / boundary; seeds are
        connected regions of confident interior, grown over the foreground by a
        watershed. ``"components"``: connected components of each class's argmax
        region (optionally split by a distance-transform watershed). ``"auto"``:
        ``"boundary"`` for three classes, else ``"components"``.
    ndim : int, optional
        Spatial dimensions of one object (2 or 3). With 2 and a ``(C, Z, Y, X)``
        input, each slice is labelled on its own and ids stay unique across the
        stack. Default: all axes after the first.
    interior_threshold : float
        Interior probability above which a pixel seeds an object.
    foreground_threshold : float
        Interior + boundary probability above which a pixel belongs to an object.
    min_size : int, optional
        Objects with fewer pixels are removed (default 8 in 2D, 27 in 3D).
    split_touching : bool
        ``"components"`` mode: split touching convex objects at distance-map saddles.
    min_distance : int
        Minimum distance between the split seeds.

    Returns
    -------
    numpy.ndarray
        int32 labels of shape ``spatial``; 0 is background, ids are 1..N.
    """
    prob = np.asarray(probabilities)
    if prob.ndim < 3:
        raise SegNetError(f"probabilities must be (C, Y, X) or (C, Z, Y, X), not {prob.shape}")
    if prob.shape[0] < 2:
        raise SegNetError("probabilities need at least two classes (background first)")
    if np.isnan(prob).any():
        raise SegNetError("probabilities contain NaN")
    spatial = prob.ndim - 1
    ndim = spatial if ndim is None else int(ndim)
    if ndim not in (2, 3) or ndim > spatial:
        raise SegNetError(f"ndim must be 2 or 3 and at most {spatial}")
    if mode == "auto":
        mode = "boundary" if prob.shape[0] == 3 else "components"
    if mode not in ("boundary", "components"):
        raise SegNetError(f"mode must be 'auto', 'boundary' or 'components', not {mode!r}")
    if mode == "boundary" and prob.shape[0] != 3:
        raise SegNetError("mode='boundary' needs background/interior/boundary probabilities")
    min_size = (8 if ndim == 2 else 27) if min_size is None else int(min_size)

    def one(p: np.ndarray) -> np.ndarray:
        if mode == "boundary":
            return _boundary_instances(p, interior_threshold, foreground_threshold, min_size)
        return _component_instances(p, split_touching, min_distance, min_size)

    if ndim == spatial:
        return one(prob)
    outer = prob.shape[1 : 1 + spatial - ndim]
    out = np.zeros(prob.shape[1:], np.int32)
    offset = 0
    for idx in np.ndindex(*outer):
        lab = one(prob[(slice(None), *idx)])
        out[idx] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
    return out
