"""From class probabilities to instance labels (each object its own id)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.segmentation import relabel_sequential, watershed

from .. import checks
from ..errors import Cancelled, SegNetError
from ..options import InstanceOptions

_DEFAULT = InstanceOptions()


def _boundary_instances(
    prob: np.ndarray, interior_threshold: float, foreground_threshold: float, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels, and the pixels that decide them (seeds and seedless objects)."""
    interior, boundary = prob[1], prob[2]
    foreground = (interior + boundary) > foreground_threshold
    seed_mask = (interior > interior_threshold) & foreground
    seeds = cc_label(seed_mask, connectivity=1)
    # Grow seeds over the foreground, lowest boundary evidence first.
    lab = watershed(1.0 - interior, seeds, mask=foreground)
    # Objects too small to have a confident interior keep their own id.
    orphan = foreground & (lab == 0)
    if orphan.any():
        extra = cc_label(orphan, connectivity=1)
        lab = np.where(extra > 0, extra + lab.max(), lab)
    return _size_filter(lab, min_size), seed_mask | orphan


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
    mode: str = _DEFAULT.mode,
    ndim: int | None = None,
    interior_threshold: float = _DEFAULT.interior_threshold,
    foreground_threshold: float = _DEFAULT.foreground_threshold,
    min_size: int | None = _DEFAULT.min_size,
    split_touching: bool = _DEFAULT.split_touching,
    min_distance: int = _DEFAULT.min_distance,
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
    opts = InstanceOptions(
        mode=mode,
        interior_threshold=interior_threshold,
        foreground_threshold=foreground_threshold,
        min_size=min_size,
        split_touching=split_touching,
        min_distance=min_distance,
    )
    prob = np.asarray(_probabilities(probabilities))
    checks.finite(prob, "probabilities", float32=False)
    spatial = prob.ndim - 1
    ndim = _check_ndim(ndim, spatial)
    kw = _label_kwargs(opts, prob.shape[0], ndim)
    if ndim != spatial:
        outer = prob.shape[1 : 1 + spatial - ndim]
        out = np.zeros(prob.shape[1:], np.int32)
        offset = 0
        for idx in np.ndindex(*outer):
            lab = _label(prob[(slice(None), *idx)], **kw)[0]
            out[idx] = np.where(lab > 0, lab + offset, 0)
            offset += int(lab.max())
        return out
    return _label(prob, **kw)[0]


def _probabilities(probabilities):
    """``(C, *spatial)`` class probabilities with at least 2 spatial axes, or a SegNetError."""
    prob = checks.array(probabilities, "probabilities")
    if len(prob.shape) < 3:
        raise SegNetError(
            f"probabilities must be (C, Y, X), (C, Z, Y, X) or stacks of them, not shape "
            f"{tuple(prob.shape)}"
        )
    return prob


def _check_ndim(ndim: int | None, spatial: int) -> int:
    if ndim is None and spatial in (2, 3):
        return spatial
    if not checks.is_int(ndim) or ndim not in (2, 3) or ndim > spatial:
        raise SegNetError(
            f"ndim must be 2 or 3 (at most the {spatial} spatial axes) or None, not {ndim!r}"
        )
    return int(ndim)


def _label_kwargs(opts: InstanceOptions, n_classes: int, ndim: int) -> dict:
    """The arguments of :func:`_label`: the mode resolved, the size for ``ndim``."""
    if n_classes < 2:
        raise SegNetError("probabilities need at least two classes (background first)")
    mode = opts.mode
    if mode == "auto":
        mode = "boundary" if n_classes == 3 else "components"
    if mode == "boundary" and n_classes != 3:
        raise SegNetError("mode='boundary' needs background/interior/boundary probabilities")
    return {
        "mode": mode,
        "interior_threshold": opts.interior_threshold,
        "foreground_threshold": opts.foreground_threshold,
        "min_size": opts.min_size_for(ndim),
        "split_touching": opts.split_touching,
        "min_distance": opts.min_distance,
    }


def _label(
    prob, mode, interior_threshold, foreground_threshold, min_size, split_touching, min_distance
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of one image/volume and the mask of pixels that decide each object."""
    if mode == "boundary":
        return _boundary_instances(prob, interior_threshold, foreground_threshold, min_size)
    lab = _component_instances(prob, split_touching, min_distance, min_size)
    return lab, lab > 0


def label_with_seeds(
    probabilities: np.ndarray, options: InstanceOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of one image or volume, and the pixels that decide each object.

    The deciding pixels (an object's seeds, or the whole object where it has none)
    are pixelwise decisions, so any block that sees an object whole finds the same
    ones: the blockwise jobs name objects by their first such pixel.

    Returns
    -------
    tuple of numpy.ndarray
        int32 labels (0 background, ids 1..N) and the boolean mask of deciding pixels.
    """
    prob = np.asarray(probabilities)
    return _label(prob, **_label_kwargs(options, prob.shape[0], prob.ndim - 1))


def _blocks(shape: tuple[int, ...], block: tuple[int, ...]):
    for idx in np.ndindex(*[int(np.ceil(s / b)) for s, b in zip(shape, block)]):
        lo = tuple(i * b for i, b in zip(idx, block))
        hi = tuple(min(a + b, s) for a, b, s in zip(lo, block, shape))
        yield lo, hi


def label_instances_blockwise(
    probabilities,
    *,
    out=None,
    block_size: int | tuple[int, ...] | None = None,
    halo: int = 64,
    ndim: int | None = None,
    progress=None,
    cancel=None,
    **options,
):
    """:func:`label_instances` block by block, for probabilities larger than memory.

    Each block is labelled together with ``halo`` pixels of its neighbours. An object
    belongs to the block that holds its first pixel (in raster order) and is written
    whole by that block only, so objects that cross block borders keep one id.
    Whenever every cluster of touching objects is smaller than ``halo``, the result
    equals the in-memory one up to a renumbering of ids, except for pixels whose
    probabilities are exactly tied between two objects (the watershed breaks such
    ties in flooding order, which depends on the array's extent); larger clusters may
    be cut where blocks meet. Memory stays at one block plus its halo.

    Parameters
    ----------
    probabilities : array-like
        ``(C, *spatial)`` numpy, zarr or dask array.
    out : array-like, optional
        int32 array of the spatial shape to write into (e.g. a zarr array); a new
        numpy array by default.
    block_size : int or tuple, optional
        Block edge (default 1024 in 2D, 128 in 3D).
    halo : int
        Context on each side of a block, in pixels: at least the size of the largest
        cluster of touching objects.
    ndim : int, optional
        As in :func:`label_instances`; 2 with a ``(C, Z, Y, X)`` input labels each
        slice separately (ids unique over the stack).
    progress : callable, optional
        ``progress(done_blocks, total_blocks)``.
    cancel : threading.Event, optional
        Stops with :class:`~napari_segnet.errors.Cancelled`.
    **options
        Passed to :func:`label_instances` (thresholds, ``mode``, ``min_size``, ...).

    Returns
    -------
    array
        ``out``, holding ids 1..N (0 = background).
    """
    opts = InstanceOptions.from_dict(options)
    probabilities = _probabilities(probabilities)
    shape = tuple(int(s) for s in probabilities.shape[1:])
    spatial = len(shape)
    ndim = _check_ndim(ndim, spatial)
    halo = checks.integer("halo", halo, low=0)
    block = checks.sizes("block_size", block_size, ndim)
    if block is None:
        block = (1024 if ndim == 2 else 128,) * ndim
    checks.callback("progress", progress)
    checks.cancel_event(cancel)
    if out is None:
        out = np.zeros(shape, np.int32)
    else:
        checks.out_array(out, shape, "i", source=probabilities)
    n_outer = spatial - ndim
    inner = shape[n_outer:]
    opts = _label_kwargs(opts, int(probabilities.shape[0]), ndim)
    blocks = list(_blocks(inner, block))
    outers = list(np.ndindex(*shape[:n_outer]))
    total = len(blocks) * len(outers)
    offset = 0
    done = 0
    for o in outers:
        for lo, hi in blocks:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {done} of {total} blocks")
            elo = tuple(max(a - halo, 0) for a in lo)
            ehi = tuple(min(b + halo, s) for b, s in zip(hi, inner))
            region = tuple(slice(a, b) for a, b in zip(elo, ehi))
            p = np.asarray(probabilities[(slice(None), *o, *region)])
            checks.finite(p, "probabilities", float32=False)
            lab, decisive = _label(p, **opts)
            # An object's anchor is the first of its seed pixels in raster order: seeds
            # are pixelwise decisions, so every block that sees the object agrees.
            anchor_lab = np.where(decisive, lab, 0)
            flat = np.flatnonzero(anchor_lab)
            if flat.size:
                ids, first = np.unique(anchor_lab.ravel()[flat], return_index=True)
                anchors = np.stack(np.unravel_index(flat[first], lab.shape), axis=1) + elo
                own = np.all((anchors >= lo) & (anchors < hi), axis=1)
                mapping = np.zeros(int(lab.max()) + 1, np.int64)
                mapping[ids[own]] = np.arange(1, int(own.sum()) + 1) + offset
                new = mapping[lab]
                if own.any():
                    current = np.asarray(out[(*o, *region)])
                    out[(*o, *region)] = np.where(new > 0, new, current).astype(np.int32)
                offset += int(own.sum())
            done += 1
            if progress is not None:
                progress(done, total)
    return out
