"""Rescaling an image so its objects have the size the model was trained on, and back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import resize

from ..errors import SegNetError
from ..models.base import SegNet
from .axes import Layout


def rescale_factor(model: SegNet, diameter: float | None) -> float:
    """How much to zoom an image whose objects are ``diameter`` pixels across (1: none)."""
    if diameter is None:
        return 1.0
    if diameter <= 0:
        raise SegNetError("diameter must be positive (typical object diameter in pixels)")
    trained = model.metadata.diameter
    if not trained:
        raise SegNetError(
            "this model records no training object diameter, so diameter= cannot rescale; "
            "leave diameter=None"
        )
    return float(trained) / float(diameter)


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
        Zoom applied to the spatial axes (1: none).
    """

    layout: Layout
    image: object
    factor: float

    @classmethod
    def of(cls, src, layout: Layout, model: SegNet, diameter: float | None) -> Rescaled:
        factor = rescale_factor(model, diameter)
        if factor == 1.0:
            return cls(layout, src, 1.0)
        arr = np.asarray(src).astype(np.float32)
        shape = [max(1, round(s * factor)) for s in layout.spatial_shape]
        return cls(layout, zoom(arr, layout, shape, order=1), factor)

    def restore_probabilities(self, prob: np.ndarray) -> np.ndarray:
        """``(C, *shape)`` probabilities back on the input's grid (linear)."""
        if self.factor == 1.0:
            return prob
        full = (prob.shape[0], *self.layout.out_shape)
        return resize(prob, full, order=1, preserve_range=True).astype(np.float32)

    def restore_labels(self, labels: np.ndarray | None) -> np.ndarray | None:
        """Class or instance ids back on the input's grid (nearest neighbour)."""
        if labels is None or self.factor == 1.0:
            return labels
        out = resize(
            labels, self.layout.out_shape, order=0, preserve_range=True, anti_aliasing=False
        )
        return out.astype(labels.dtype)
