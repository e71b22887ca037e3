"""Measurements of instance layers: the pixel size from the layer, intensities from
the image, the table as the layer's ``features`` and as a CSV file.

The layer's scale is the pixel size, read as micrometres unless the layer's units
name another length; a layer with scale 1 on every spatial axis is measured in
pixels. With a ``T`` axis every frame is measured on its own (a ``t`` column); the
hover then shows one row per id (that of its last frame), the CSV all of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import SegNetError
from ..measure import measure, write_csv
from .layers import META_KEY, layer_data

# pint unit names -> the short names used in column names.
_UNITS = {"micrometer": "um", "micron": "um", "nanometer": "nm", "millimeter": "mm"}
MEASURABLE = ("YX", "ZYX", "TYX", "TZYX")


def spacing_of(scale, axes: str, units=None) -> tuple[tuple[float, ...] | None, str]:
    """Pixel size of the spatial axes in ``axes`` from a layer's ``scale``, and its unit."""
    space = tuple(float(s) for s, a in zip(scale, axes, strict=False) if a != "T")
    if all(s == 1.0 for s in space):
        return None, "px"
    names = {str(u) for u, a in zip(units or (), axes, strict=False) if a != "T"}
    unit = _UNITS.get(names.pop(), "um") if len(names) == 1 else "um"
    return space, unit


def intensity_image(layer, axes: str) -> np.ndarray:
    """An image layer's data with its channel axis (if any) last, as ``measure`` takes it."""
    data = np.asarray(layer_data(layer))
    if "C" in axes and not getattr(layer, "rgb", False):
        data = np.moveaxis(data, axes.index("C"), -1)
    return data


def measure_arrays(labels, image, out_axes: str, scale, units=None) -> pd.DataFrame | None:
    """``measure`` for a result: None when its axes are not measurable (e.g. ``ZTYX``)."""
    if out_axes not in MEASURABLE:
        return None
    spacing, unit = spacing_of(scale, out_axes, units)
    return measure(labels, image, spacing, axes=out_axes, unit=unit)


def features_of(table: pd.DataFrame) -> pd.DataFrame:
    """The table as napari labels features: an ``index`` column maps label ids to rows."""
    return table.assign(index=table["label"].to_numpy())


def measure_layer(labels_layer, image_layer=None) -> pd.DataFrame:
    """Measure a result labels layer as it is now (corrections included).

    The axes come from the layer's ``napari_segnet`` metadata; the intensities from
    ``image_layer`` when its data (without channels) has the labels' shape.
    """
    meta = labels_layer.metadata.get(META_KEY, {})
    axes = meta.get("axes") or "ZYX"[-labels_layer.ndim :]
    image = None
    if image_layer is not None:
        image = intensity_image(image_layer, meta.get("source_axes", axes))
    table = measure_arrays(
        np.asarray(labels_layer.data),
        image,
        axes,
        labels_layer.scale,
        getattr(labels_layer, "units", None),
    )
    if table is None:
        raise SegNetError(f"cannot measure a layer with axes {axes!r}; use {MEASURABLE}")
    return table


__all__ = ["features_of", "measure_layer", "spacing_of", "write_csv"]
