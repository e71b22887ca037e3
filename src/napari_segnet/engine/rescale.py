"""Rescaling an image so its objects have the size the model was trained on, and back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.transform import resize

from .. import checks
from ..errors import SegNetError
from ..models.base import SegNet
from .axes import Layout

# Zoom factors beyond this are refused: objects that far from the trained size are
# outside what the model has seen, and zooming in that far multiplies memory by its square.
MAX_ZOOM = 16.0
# Bytes per pixel of the zoomed image: the float32 image, probabilities per class,
# the class ids and instance ids (counted for three classes).
ZOOM_BYTES = 4 + 3 * 4 + 1 + 4


def rescale_factor(model: SegNet, diameter: float | None) -> float:
    """How much to zoom an image whose objects are ``diameter`` pixels across (1: none).

    Raises
    ------
    SegNetError
        For a diameter that is not a finite positive number, a model without a
        training diameter, or a zoom beyond ``MAX_ZOOM`` either way.
    """
    if diameter is None:
        return 1.0
    if not (checks.is_real(diameter) and math.isfinite(diameter) and diameter > 0):
        raise SegNetError(
            "diameter must be positive and finite (typical object diameter in pixels), "
            f"'auto' or None, not {diameter!r}"
        )
    diameter = float(diameter)
    trained = model.metadata.diameter
    if not trained:
        raise SegNetError(
            "this model records no training object diameter, so diameter= cannot rescale; "
            "leave diameter=None"
        )
    factor = float(trained) / diameter
    if not 1 / MAX_ZOOM <= factor <= MAX_ZOOM:
        raise SegNetError(
            f"diameter={diameter:g} would zoom the image by {factor:.3g} (the model was "
            f"trained on objects {float(trained):g} px across); diameters from "
            f"{float(trained) / MAX_ZOOM:g} to {float(trained) * MAX_ZOOM:g} px are allowed"
        )
    return factor


def _factors(layout: Layout, factor) -> tuple[float, ...]:
    """One zoom per spatial axis from one number or a sequence of them."""
    if isinstance(factor, (tuple, list)):
        return tuple(float(f) for f in factor)
    return tuple(float(factor) for _ in layout.spatial)


def check_zoom_memory(layout: Layout, factor) -> None:
    """Refuse a zoom (one factor, or one per spatial axis) whose in-memory results would
    not fit the free memory."""
    import psutil

    zoomed = [max(1, round(s * f)) for s, f in zip(layout.spatial_shape, _factors(layout, factor))]
    pixels = float(np.prod(zoomed)) * float(np.prod(layout.outer_shape))
    need, free = pixels * ZOOM_BYTES, psutil.virtual_memory().available
    if need > free:
        raise SegNetError(
            f"zooming by {max(_factors(layout, factor)):.3g} makes a {pixels:.3g}-pixel image "
            f"that needs about "
            f"{need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB are free; give a larger "
            "diameter or diameter=None"
        )


def zoom(arr: np.ndarray, layout: Layout, shape_out, order: int) -> np.ndarray:
    """Resize the spatial axes of an array laid out like ``layout`` (any other axes kept)."""
    target = list(arr.shape)
    for ax, s in zip(layout.spatial, shape_out):
        target[ax] = s
    return resize(
        arr,
        target,
        order=order,
        preserve_range=True,
        anti_aliasing=order > 0 and any(t < s for t, s in zip(target, arr.shape)),
        mode="reflect",
    ).astype(arr.dtype if order == 0 else np.float32, copy=False)


@dataclass(frozen=True)
class Rescaled:
    """The image the engine works on, and how to map its results back to the input grid.

    Attributes
    ----------
    layout : Layout
        The input's layout (its spatial shape is the results' final shape).
    image : array-like
        The input itself, or its zoomed float32 copy.
    factor : float
        Zoom applied to the spatial axes (1: none); the in-plane one when
        ``factors`` differ.
    factors : tuple of float, optional
        Zoom of each spatial axis when they differ (anisotropic spacing).
    """

    layout: Layout
    image: object
    factor: float
    factors: tuple[float, ...] | None = None

    @classmethod
    def of(cls, src, layout: Layout, model: SegNet, diameter: float | None) -> Rescaled:
        return cls.zoomed(src, layout, rescale_factor(model, diameter))

    @classmethod
    def zoomed(cls, src, layout: Layout, factor, plane: float | None = None) -> Rescaled:
        """``src`` zoomed by ``factor`` (one number, or one per spatial axis).

        ``plane`` is the in-plane zoom to report as ``factor`` (default: the first).
        """
        factors = _factors(layout, factor)
        plane = factors[0] if plane is None else float(plane)
        if all(f == 1.0 for f in factors):
            return cls(layout, src, 1.0)
        check_zoom_memory(layout, factors)
        arr = np.asarray(src).astype(np.float32)
        checks.finite(arr, "image")
        shape = [max(1, round(s * f)) for s, f in zip(layout.spatial_shape, factors)]
        uneven = len(set(factors)) > 1
        return cls(layout, zoom(arr, layout, shape, order=1), plane, factors if uneven else None)

    def restore_probabilities(self, prob: np.ndarray) -> np.ndarray:
        """``(C, *shape)`` probabilities back on the input's grid (linear)."""
        if self.factor == 1.0 and self.factors is None:
            return prob
        full = (prob.shape[0], *self.layout.out_shape)
        return resize(prob, full, order=1, preserve_range=True).astype(np.float32)

    def restore_labels(self, labels: np.ndarray | None) -> np.ndarray | None:
        """Class or instance ids back on the input's grid (nearest neighbour)."""
        if labels is None or (self.factor == 1.0 and self.factors is None):
            return labels
        out = resize(
            labels, self.layout.out_shape, order=0, preserve_range=True, anti_aliasing=False
        )
        return out.astype(labels.dtype)
