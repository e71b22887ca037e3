"""Estimating the typical object diameter of an image with the model itself.

A first pass segments a central crop at native scale and takes the area-weighted
median equivalent diameter of the objects found. A model run far from the object
size it was trained on finds them badly (large objects fall apart, small ones merge or
vanish), so when that first estimate is far from the training diameter the crop is
rescaled by it and measured again (at most ``max_passes`` passes in all).
"""

from __future__ import annotations

import math

import numpy as np
from skimage.measure import regionprops
from skimage.segmentation import clear_border

from ..errors import SegNetError
from ..models.base import SegNet
from ..postprocess.instances import label_instances
from ..postprocess.results import instance_options
from .axes import Layout, make_layout
from .channels import match_channels
from .plan import as_source
from .predict import predict
from .rescale import zoom

# Estimates within this ratio of the training diameter need no second pass.
CLOSE_ENOUGH = 1.25
# Fewest whole (not border-touching) objects for the border ones to be left out.
MIN_WHOLE = 5


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Diameter of the disc (2D) or ball (3D) of each object's area or volume."""
    areas = np.array([p.area for p in regionprops(labels)], float)
    if labels.ndim == 2:
        return 2.0 * np.sqrt(areas / math.pi)
    return (6.0 * areas / math.pi) ** (1.0 / 3.0)


def typical_diameter(labels: np.ndarray) -> float | None:
    """Area-weighted median equivalent diameter of the objects (None without objects).

    The one statistic for object size: what training records as a model's diameter
    and what :func:`estimate_diameter` measures, so the two agree on the same data.
    """
    diameters = equivalent_diameters(labels)
    if diameters.size == 0:
        return None
    return weighted_median(diameters, diameters**labels.ndim)


def sample_region(src, layout: Layout, max_size: int) -> tuple[np.ndarray, str]:
    """The middle plane of the outer (T, Z-for-2D) axes, cropped centrally to ``max_size``.

    Returns
    -------
    sample, axes
        A numpy array and its axes (channel and spatial axes of the input).
    """
    index: list = [slice(None)] * len(layout.shape)
    for ax in layout.outer:
        index[ax] = layout.shape[ax] // 2
    for ax in layout.spatial:
        n = layout.shape[ax]
        lo = max(0, (n - max_size) // 2)
        index[ax] = slice(lo, lo + min(n, max_size))
    axes = "".join(a for i, a in enumerate(layout.axes) if i not in layout.outer)
    return np.asarray(src[tuple(index)]), axes


def measure_diameter(
    sample: np.ndarray, model: SegNet, axes: str, factor: float = 1.0, device="auto"
) -> float | None:
    """Typical object diameter in ``sample`` (in its own pixels) after a zoom by ``factor``.

    The area-weighted median of the objects' equivalent diameters. Objects cut by
    the sample's border are left out when enough whole ones remain.
    """
    layout = make_layout(sample.shape, axes, model.dims, model.in_channels)
    work = sample
    if factor != 1.0:
        shape = [max(8, round(s * factor)) for s in layout.spatial_shape]
        work = zoom(sample.astype(np.float32), layout, shape, order=1)
    if model.arch == "maskrcnn":
        from .detect import detect  # the detector's modules load only when used

        labels = detect(work, model, axes, device=device).labels
    else:
        prob = predict(work, model, axes, device=device)
        labels = label_instances(prob, **instance_options(model, None))
    whole = clear_border(labels)
    if len(np.unique(whole)) - 1 >= MIN_WHOLE:
        labels = whole
    typical = typical_diameter(labels)
    return None if typical is None else typical / factor


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half the total weight lies.

    Weighted by object area, the median is that of the object under a random
    foreground pixel: small fragments and specks barely move it.
    """
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def estimate_diameter(
    image,
    model: SegNet,
    axes: str | None = None,
    *,
    device="auto",
    max_size: int | None = None,
    max_passes: int = 3,
) -> float | None:
    """Estimate the typical object diameter (pixels) of an image with ``model``.

    The model segments a central crop (the middle plane of any T or Z axis a 2D
    model iterates over) at native scale; the median equivalent diameter of the
    objects found (weighted by their area) is the first estimate. While an estimate differs from the
    model's training diameter by more than a factor 1.25, the crop is rescaled so
    objects would have the training size and measured again, at most
    ``max_passes`` passes in all (cellpose's size model works the same way, with a
    regression model for the first guess).

    Parameters
    ----------
    image : array-like
        numpy, dask or zarr; only the central crop is read.
    model : SegNet
        The segmentation model (instance models measure best).
    axes : str, optional
        As in :func:`napari_segnet.segment`.
    device : str
        As in :func:`napari_segnet.segment`.
    max_size : int, optional
        Edge of the central crop, in pixels (default 512 in 2D, 128 in 3D).
    max_passes : int
        Passes at most (1: native scale only).

    Returns
    -------
    float or None
        Area-weighted median equivalent diameter (2D: of a disc of the same area;
        3D: of a ball of the same volume), in input pixels; None when no object was found.
    """
    if not isinstance(model, SegNet):
        raise SegNetError("model must be a napari-segnet model (build_model, load_model or train)")
    if max_passes < 1:
        raise SegNetError("max_passes must be at least 1")
    src, axes, _ = match_channels(as_source(image), axes, model.in_channels)
    layout = make_layout(tuple(src.shape), axes, model.dims, model.in_channels)
    size = max_size or (512 if model.dims == 2 else 128)
    sample, sample_axes = sample_region(src, layout, size)
    sample_layout = make_layout(sample.shape, sample_axes, model.dims, model.in_channels)
    estimate = measure_diameter(sample, model, sample_axes, device=device)
    trained = model.metadata.diameter
    used = 1.0
    for _ in range(max_passes - 1):
        if estimate is None or not trained:
            break
        # Objects measured at zoom ``used`` were ``estimate * used`` across there.
        if 1 / CLOSE_ENOUGH <= trained / (estimate * used) <= CLOSE_ENOUGH:
            break
        used = float(np.clip(trained / estimate, 1 / 8, 8))
        # Zooming in: crop first, so the zoomed sample stays at most ``size`` across.
        crop = sample
        if used > 1:
            crop, _ = sample_region(sample, sample_layout, max(64, int(size / used)))
        again = measure_diameter(crop, model, sample_axes, used, device)
        if again is None:
            break
        estimate = again
    return estimate
