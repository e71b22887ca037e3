"""3D instances from a 2D model's slice-by-slice probabilities.

A 2D instance model sees each slice alone, so it draws no boundary between two
nuclei stacked in Z; grown from 3D components of their interior, such nuclei would
merge. Seeds here are instead the maxima of the 3D distance to the edge of the
confident interior (measured with the Z spacing): two touching nuclei meet at a neck,
and each keeps its own maximum. The seeds grow over the 3D foreground by a watershed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.morphology import h_maxima
from skimage.segmentation import relabel_sequential, watershed

from ..errors import SegNetError
from .instances import label_instances


def stitch_volume(
    prob: np.ndarray,
    *,
    anisotropy: float = 1.0,
    interior_threshold: float = 0.6,
    foreground_threshold: float = 0.5,
    min_size: int | None = None,
    sigma: float = 1.0,
    h: float = 0.5,
) -> np.ndarray:
    """3D instance labels from ``(3, Z, Y, X)`` background / interior / boundary maps.

    Parameters
    ----------
    prob : numpy.ndarray
        Per-slice probabilities stacked along Z.
    anisotropy : float
        Z spacing over XY spacing.
    interior_threshold, foreground_threshold : float
        As in :func:`label_instances`.
    min_size : int, optional
        Smallest object in voxels (default: 27 voxels' worth of isotropic volume,
        i.e. ``27 / anisotropy``).
    sigma : float
        In-plane smoothing of the maps (pixels; ``sigma / anisotropy`` slices in Z).
    h : float
        Depth (pixels of distance) a maximum needs to seed its own object.

    Returns
    -------
    numpy.ndarray
        int32 labels ``(Z, Y, X)``, ids 1..N.
    """
    if anisotropy <= 0:
        raise SegNetError("anisotropy must be positive (Z spacing / XY spacing)")
    smooth = (sigma / anisotropy, sigma, sigma)
    interior = ndi.gaussian_filter(prob[1].astype(np.float32), smooth)
    boundary = ndi.gaussian_filter(prob[2].astype(np.float32), smooth)
    foreground = (interior + boundary) > foreground_threshold
    core = (interior > interior_threshold) & foreground
    dist = ndi.distance_transform_edt(core, sampling=(anisotropy, 1.0, 1.0))
    dist = ndi.gaussian_filter(dist, (1.0 / anisotropy, 1.0, 1.0))
    seeds = cc_label(h_maxima(dist, h), connectivity=1)
    lab = watershed(-dist, seeds, mask=foreground)
    orphan = foreground & (lab == 0)
    if orphan.any():
        extra = cc_label(orphan, connectivity=1)
        lab = np.where(extra > 0, extra + lab.max(), lab)
    if min_size is None:
        min_size = max(1, round(27 / anisotropy))
    if min_size > 1 and lab.max() > 0:
        small = np.bincount(lab.ravel()) < min_size
        small[0] = False
        lab = np.where(small[lab], 0, lab)
    return relabel_sequential(lab)[0].astype(np.int32)


def stitch_slices(prob: np.ndarray, axes: str, *, anisotropy: float = 1.0, **options) -> np.ndarray:
    """3D instances over the Z axis of per-slice probabilities; other axes (T) apart.

    Parameters
    ----------
    prob : numpy.ndarray
        ``(C, *shape)`` probabilities whose spatial axes are named by ``axes``
        (which holds ``Z``, ``Y`` and ``X``).
    axes : str
        Axes of ``prob`` after its first (class) axis, e.g. ``"ZYX"`` or ``"TZYX"``.
    anisotropy : float
        Z spacing over XY spacing.
    **options
        Instance options (``interior_threshold``, ``foreground_threshold``,
        ``min_size``; ``mode`` and the ``"components"`` settings are used only for
        models without the three instance classes, which get 3D connected
        components).

    Returns
    -------
    numpy.ndarray
        int32 labels of ``prob.shape[1:]``; ids unique over the whole array.
    """
    if "Z" not in axes or len(axes) != prob.ndim - 1:
        raise SegNetError(f"stitching needs a Z axis among the probabilities' axes, not {axes!r}")
    rest = [i for i, a in enumerate(axes) if a not in "ZYX"]
    order = [*rest, axes.index("Z"), *(i for i, a in enumerate(axes) if a in "YX")]
    moved = np.transpose(prob, (0, *(i + 1 for i in order)))
    out = np.zeros(moved.shape[1:], np.int32)
    offset = 0
    volume_opts = {
        k: options[k]
        for k in ("interior_threshold", "foreground_threshold", "min_size")
        if k in options
    }
    for idx in np.ndindex(*moved.shape[1 : 1 + len(rest)]):
        p = moved[(slice(None), *idx)]
        if p.shape[0] == 3 and options.get("mode", "auto") in ("auto", "boundary"):
            lab = stitch_volume(p, anisotropy=anisotropy, **volume_opts)
        else:
            lab = label_instances(p, **{**options, "ndim": 3})
        out[idx] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
    return np.transpose(out, np.argsort(order))
