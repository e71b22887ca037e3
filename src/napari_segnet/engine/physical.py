"""Physical pixel sizes: checking a spacing, and the zoom per axis that it asks for.

A spacing gives the size of a pixel along each of the image's Z, Y and X axes in
physical units (µm, say). With it, an object diameter can be given in those units,
a model that records the pixel size it was trained at can be matched without any
diameter, and anisotropic Z reaches 3D processing: a 3D model's Z axis is zoomed so
voxels have the shape the model was trained on, and a 2D model's slices are stitched
with distances measured in Z spacing over XY spacing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import checks
from ..errors import SegNetError
from ..models.base import SegNet
from .axes import Layout
from .rescale import MAX_ZOOM

SPATIAL_LETTERS = "ZYX"
# Zooms this close to 1 are not worth resampling for.
NO_ZOOM = 1e-3


def check_spacing(spacing: Any, axes: str) -> dict[str, float] | None:
    """Pixel size per Z/Y/X axis of ``axes`` (in their order), or None.

    Parameters
    ----------
    spacing : float, sequence of float or None
        One positive number for every spatial axis, or one per Z/Y/X axis of the
        image, in the order they appear in ``axes``.
    axes : str
        The image's axes (``"ZYX"``, ``"TYXC"``, ...).

    Raises
    ------
    SegNetError
        For a wrong count, or a value that is not a finite positive number.
    """
    if spacing is None:
        return None
    letters = "".join(a for a in axes if a in SPATIAL_LETTERS)
    if isinstance(spacing, (tuple, list, np.ndarray)):
        items = list(np.asarray(spacing, dtype=object).ravel())
    else:
        items = [spacing]
    if len(items) == 1:
        items = items * len(letters)
    ok = all(checks.is_real(v) and math.isfinite(v) and v > 0 for v in items)
    if len(items) != len(letters) or not ok:
        raise SegNetError(
            f"spacing must be one positive number or {len(letters)} of them, one per "
            f"spatial axis ({letters}) of axes {axes!r}, in physical units such as µm; "
            f"not {spacing!r}"
        )
    return {a: float(v) for a, v in zip(letters, items)}


def plane_spacing(spacing: dict[str, float]) -> float:
    """The in-plane pixel size: the geometric mean of the Y and X spacing."""
    return math.sqrt(spacing["Y"] * spacing["X"])


def model_pixel_size(model: SegNet) -> dict[str, float] | None:
    """The pixel size the model was trained at, per axis (``{"Y":..., "X":...}``), or None.

    ``meta["pixel_size"]`` holds one number (every axis) or one per spatial axis of
    the model (Z first for 3D models); anything else reads as unknown.
    """
    try:
        size = model.metadata.pixel_size
    except (SegNetError, TypeError, ValueError):
        return None
    if not size or not all(math.isfinite(p) and p > 0 for p in size):
        return None
    letters = SPATIAL_LETTERS[-model.dims :]
    if len(size) == 1:
        size = size * len(letters)
    if len(size) == 2 and model.dims == 3:
        letters = "YX"
    if len(size) != len(letters):
        return None
    return dict(zip(letters, (float(p) for p in size)))


def check_physical_diameter(value: Any, spacing: dict[str, float] | None, diameter: Any) -> None:
    """``physical_diameter`` must be a positive number, with a spacing, and alone."""
    if value is None:
        return
    if not (checks.is_real(value) and math.isfinite(value) and value > 0):
        raise SegNetError(
            "physical_diameter must be a positive number (object diameter in the units of "
            f"spacing, e.g. µm), not {value!r}"
        )
    if spacing is None:
        raise SegNetError(
            "physical_diameter needs spacing= (the pixel size in the same units) to be "
            "turned into pixels"
        )
    if diameter != "auto":
        raise SegNetError(
            "give the object diameter once: diameter= (pixels) or physical_diameter= "
            "(units of spacing), not both"
        )


@dataclass(frozen=True)
class Zoom:
    """The zoom per spatial axis of a layout, and how it was chosen.

    Attributes
    ----------
    factors : tuple of float
        Zoom of each spatial axis (``layout.spatial`` order); 1: none.
    plane : float
        The in-plane (Y, X) zoom, their geometric mean.
    reason : str
        ``"diameter"``, ``"pixel size"``, ``"spacing"`` (Z or in-plane anisotropy
        only) or ``"none"``.
    """

    factors: tuple[float, ...]
    plane: float
    reason: str

    @property
    def identity(self) -> bool:
        return all(abs(f - 1.0) < NO_ZOOM for f in self.factors)


def zoom_for(
    model: SegNet,
    layout: Layout,
    spacing: dict[str, float] | None,
    plane_zoom: float | None,
) -> Zoom:
    """The zoom per spatial axis.

    Parameters
    ----------
    model, layout
        The model and the image's layout.
    spacing : dict or None
        From :func:`check_spacing`.
    plane_zoom : float or None
        In-plane zoom from an object diameter (training diameter over the image's);
        None: none from a diameter.

    Without a spacing, Y and X (and a 3D model's Z) get ``plane_zoom``. With one,
    and no ``plane_zoom``, each axis gets the model's pixel size when the model
    records it. Otherwise Y and X get ``plane_zoom`` (any in-plane anisotropy
    removed), and a 3D model's Z is zoomed so voxels have the Z to XY ratio the
    model was trained at (1, cubic voxels, when it does not record one).
    """
    letters = [layout.axes[i] for i in layout.spatial]
    trained = model_pixel_size(model)
    if spacing is None:
        f = 1.0 if plane_zoom is None else float(plane_zoom)
        return Zoom(tuple(f for _ in letters), f, "none" if plane_zoom is None else "diameter")
    plane = plane_spacing(spacing)
    if plane_zoom is None and trained is not None:
        # Pixels of the model's size: the same physical objects cover the same pixels.
        target = {a: trained.get(a, math.sqrt(trained["Y"] * trained["X"])) for a in letters}
        reason = "pixel size"
    else:
        # The in-plane pixel size that gives objects the trained diameter (or keeps
        # the image's), with Z at the model's ratio to it.
        size = plane / (1.0 if plane_zoom is None else float(plane_zoom))
        ratio = 1.0
        if trained is not None and "Z" in trained:
            ratio = trained["Z"] / math.sqrt(trained["Y"] * trained["X"])
        target = {a: size * (ratio if a == "Z" else 1.0) for a in letters}
        reason = "spacing" if plane_zoom is None else "diameter"
    factors = tuple(spacing[a] / target[a] for a in letters)
    for a, f in zip(letters, factors):
        if not 1 / MAX_ZOOM <= f <= MAX_ZOOM:
            raise SegNetError(
                f"matching the model's size would zoom axis {a} by {f:.3g} (spacing "
                f"{spacing[a]:g} vs {target[a]:.3g} wanted); zooms from {1 / MAX_ZOOM:g} to "
                f"{MAX_ZOOM:g} are allowed: check the spacing, diameter and units"
            )
    plane_f = math.sqrt(factors[letters.index("Y")] * factors[letters.index("X")])
    return Zoom(factors, plane_f, reason)


def stitch_anisotropy(spacing: dict[str, float] | None, anisotropy: float | None) -> float:
    """Z spacing over in-plane spacing, from ``spacing`` or ``anisotropy`` (not both)."""
    if spacing is not None and anisotropy is not None:
        raise SegNetError("give spacing= or anisotropy=, not both (spacing sets the anisotropy)")
    if spacing is not None:
        return spacing["Z"] / plane_spacing(spacing) if "Z" in spacing else 1.0
    return 1.0 if anisotropy is None else float(anisotropy)
