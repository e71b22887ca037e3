"""A layer's pixel size (its ``scale``) and ``units``, as ``segment``'s ``spacing``.

napari keeps the physical size of a pixel in the layer's ``scale`` (one number per
data axis) and, since 0.5, its unit in ``units`` (pint units; ``pixel`` when not set).
A layer at scale 1 in pixels says nothing about its pixel size, so it gives no spacing.
"""

from __future__ import annotations

import math

PIXEL_UNITS = ("", "pixel", "pixels", "px", "none", "dimensionless")


def _unit(unit) -> str:
    """A unit in short form (``µm``), or ``""`` for pixels and none."""
    if unit is None:
        return ""
    try:
        short = f"{unit:~}"
    except (TypeError, ValueError):
        short = str(unit)
    return "" if str(unit).lower() in PIXEL_UNITS or short in PIXEL_UNITS else short


def layer_scale(layer, axes: str) -> dict[str, tuple[float, str]]:
    """Scale and short unit per Z/Y/X letter of ``axes`` (the layer's data axes)."""
    scale = tuple(float(s) for s in layer.scale)
    units = tuple(getattr(layer, "units", None) or (None,) * len(scale))
    out = {}
    for i, a in enumerate(axes):
        if a in "ZYX" and i < len(scale):  # an RGB layer's scale leaves out its colour
            out[a] = (scale[i], _unit(units[i] if i < len(units) else None))
    return out


def layer_spacing(layer, axes: str, used_axes: str) -> tuple[float, ...] | None:
    """``spacing`` for ``segment`` on ``used_axes``, or None when the layer gives none.

    Parameters
    ----------
    layer : napari.layers.Image
    axes : str
        The layer's data axes (as in the panel's *axes* field).
    used_axes : str
        The axes of the array ``segment`` gets (a channel or slice may be gone).
    """
    scale = layer_scale(layer, axes)
    if not all(a in scale for a in "YX"):
        return None
    physical = any(u for _, u in scale.values())
    plain = all(math.isclose(s, 1.0) for s, _ in scale.values())
    if plain and not physical:
        return None
    return tuple(scale[a][0] for a in used_axes if a in "ZYX" and a in scale)


def scale_text(layer, axes: str) -> str:
    """The pixel size as the panel shows it, e.g. ``"Z 2 × Y 0.65 × X 0.65 µm"``."""
    scale = layer_scale(layer, axes)
    if layer_spacing(layer, axes, axes) is None:
        return "not set (layer scale 1, in pixels): diameters in pixels only"
    units = {u for _, u in scale.values()}
    unit = units.pop() if len(units) == 1 else ""
    parts = [f"{a} {s:.4g}" + ("" if unit else f" {u}".rstrip()) for a, (s, u) in scale.items()]
    return " × ".join(parts) + (f" {unit}" if unit else " (no unit)" if not units else "")


def layer_unit(layer, axes: str) -> str:
    """The unit shared by the layer's Z/Y/X axes (``"µm"``), or ``"units"``."""
    units = {u for _, u in layer_scale(layer, axes).values()}
    return units.pop() if len(units) == 1 and "" not in units else "units"
