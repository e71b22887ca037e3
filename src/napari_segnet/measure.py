"""Per-object measurements of instance labels, as a pandas table.

Every number comes from :func:`skimage.measure.regionprops_table` (with its
``spacing`` argument for physical units); this module only checks the inputs,
picks the properties and names the columns with their units.

Column names
------------
Lengths end in the unit (``_um`` when a spacing is given, ``_px`` without one),
areas in ``_um2`` / ``_px2``, volumes in ``_um3`` / ``_px3``; axis names are the
lower-case axis letters (``centroid_y_um``). Bounding boxes are pixel indices
(``bbox_y0_px`` inclusive, ``bbox_y1_px`` exclusive), so they can slice the arrays.
Intensities are in the image's own units; ``integrated_intensity`` is the sum of
the object's pixel values.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import checks
from .errors import SegNetError

__all__ = ["measure", "summarize", "write_csv"]

# regionprops names -> ours ({u}: length unit; {a}: axis letter).
_SHAPE_2D = {
    "area": "area_{u}2",
    "equivalent_diameter_area": "equivalent_diameter_{u}",
    "eccentricity": "eccentricity",
    "axis_major_length": "major_axis_length_{u}",
    "axis_minor_length": "minor_axis_length_{u}",
    "solidity": "solidity",
}
_SHAPE_3D = {
    "area": "volume_{u}3",
    "equivalent_diameter_area": "equivalent_diameter_{u}",
    "axis_major_length": "major_axis_length_{u}",
    "axis_minor_length": "minor_axis_length_{u}",
    "solidity": "solidity",
}
_INTENSITY = {
    "intensity_mean": "mean_intensity",
    "intensity_min": "min_intensity",
    "intensity_max": "max_intensity",
}


def measure(
    labels,
    image=None,
    spacing=None,
    *,
    axes: str | None = None,
    unit: str = "um",
) -> pd.DataFrame:
    """Measure every object of an instance label image.

    Parameters
    ----------
    labels : array-like
        Integer instance ids, 0 = background; 2D (``YX``), 3D (``ZYX``) or with a
        leading time axis (``TYX``, ``TZYX``: each frame measured on its own).
        Never modified.
    image : array-like, optional
        Intensities on the same grid (same shape as ``labels``), or with one more,
        last, channel axis (``labels.shape + (C,)``): then every intensity column is
        given per channel with a ``_c0``, ``_c1``, ... suffix. Never modified.
    spacing : float or sequence of float, optional
        Pixel size per spatial axis (``T`` excluded), in ``unit``; one number for all
        axes. None: everything in pixels.
    axes : str, optional
        Axes of ``labels``: ``"YX"``, ``"ZYX"``, ``"TYX"`` or ``"TZYX"``; None means
        ``YX`` for 2D and ``ZYX`` for 3D.
    unit : str
        Name of the spacing's unit in the column names (``"um"``: ``area_um2``).

    Returns
    -------
    pandas.DataFrame
        One row per object (per frame with a ``T`` axis, then a ``t`` column holds
        the frame index): ``label``, ``centroid_<axis>``, ``area`` (2D) or ``volume``
        (3D), ``equivalent_diameter``, ``bbox_<axis>0_px``/``bbox_<axis>1_px``,
        ``eccentricity`` (2D only), ``major_axis_length``, ``minor_axis_length``,
        ``solidity`` (NaN where no convex hull exists, e.g. a one-plane object in
        3D), ``n_pixels``; with an image, ``mean_intensity``, ``min_intensity``,
        ``max_intensity`` and ``integrated_intensity``. See the module notes for
        the units in the column names.

    Raises
    ------
    SegNetError
        For labels that are not integers (or negative), an image of another shape,
        a spacing of the wrong length or not positive, or unknown axes.
    """
    labels = checks.array(labels, "labels")
    if np.dtype(labels.dtype).kind not in "iu":
        raise SegNetError(
            f"labels must be an integer array of instance ids (0 = background), not "
            f"dtype {labels.dtype}"
        )
    labels = np.asarray(labels)
    axes = _axes(axes, labels.ndim)
    spatial = axes.replace("T", "")
    if labels.size and labels.min() < 0:
        raise SegNetError("labels must not hold negative ids (0 = background)")
    if image is not None:
        image = np.asarray(checks.array(image, "image"))
        if image.shape != labels.shape and image.shape[:-1] != labels.shape:
            raise SegNetError(
                f"image has shape {image.shape} but labels have shape {labels.shape}; give "
                "an image of the same shape (optionally with a last channel axis)"
            )
        checks.finite(image, float32=False)
    if not isinstance(unit, str) or not unit.isidentifier():
        raise SegNetError(f"unit must be a short name such as 'um' or 'nm', not {unit!r}")
    space = checks.spacing(spacing, len(spatial))
    u = unit if space is not None else "px"
    if "T" not in axes:
        return _measure_one(labels, image, space, spatial, u)
    frames = [
        _measure_one(labels[t], None if image is None else image[t], space, spatial, u)
        for t in range(labels.shape[0])
    ]
    for t, f in enumerate(frames):
        f.insert(0, "t", np.full(len(f), t, np.int64))
    return pd.concat(frames, ignore_index=True)


def _axes(axes: str | None, ndim: int) -> str:
    if axes is None:
        if ndim not in (2, 3):
            raise SegNetError(
                f"labels have {ndim} dimensions; give axes (e.g. 'TZYX') or 2D/3D labels"
            )
        return "ZYX"[-ndim:]
    axes = str(axes).upper()
    if axes not in ("YX", "ZYX", "TYX", "TZYX") or len(axes) != ndim:
        raise SegNetError(
            f"axes must be one of 'YX', 'ZYX', 'TYX', 'TZYX' and fit the labels' {ndim} "
            f"dimensions, not {axes!r}"
        )
    return axes


def _measure_one(labels, image, spacing, spatial: str, u: str) -> pd.DataFrame:
    """One 2D or 3D frame."""
    from skimage.measure import regionprops_table

    shape = _SHAPE_2D if len(spatial) == 2 else _SHAPE_3D
    props = ["label", "centroid", *shape, "bbox", "num_pixels"]
    if image is not None:
        props += list(_INTENSITY)
    with warnings.catch_warnings():
        # Objects without a convex hull (one pixel, one plane in 3D) warn; they get NaN.
        warnings.simplefilter("ignore")
        with np.errstate(divide="ignore", invalid="ignore"):
            table = regionprops_table(
                labels,
                intensity_image=image,
                properties=props,
                spacing=spacing if spacing is not None else None,
            )
    n = len(spatial)
    low = spatial.lower()
    out: dict[str, np.ndarray] = {"label": table["label"].astype(np.int64)}
    for i, a in enumerate(low):
        out[f"centroid_{a}_{u}"] = table[f"centroid-{i}"]
    for key, name in shape.items():
        out[name.format(u=u)] = np.asarray(table[key], dtype=float)
    for i, a in enumerate(low):
        out[f"bbox_{a}0_px"] = table[f"bbox-{i}"]
    for i, a in enumerate(low):
        out[f"bbox_{a}1_px"] = table[f"bbox-{i + n}"]
    out["n_pixels"] = table["num_pixels"].astype(np.int64)
    if image is not None:
        channels = image.ndim > labels.ndim
        suffixes = [f"-{c}" for c in range(image.shape[-1])] if channels else [""]
        for s in suffixes:
            tag = f"_c{s[1:]}" if s else ""
            for key, name in _INTENSITY.items():
                out[name + tag] = table[key + s]
            out["integrated_intensity" + tag] = table["intensity_mean" + s] * out["n_pixels"]
    df = pd.DataFrame(out)
    if "solidity" in df:
        df["solidity"] = df["solidity"].where(np.isfinite(df["solidity"]))
    return df


def summarize(table: pd.DataFrame) -> dict:
    """A one-line summary of a :func:`measure` table for batch reports.

    Returns
    -------
    dict
        ``count`` (objects), the median, mean and total of the area (or volume)
        column and the median equivalent diameter, keyed by the table's column
        names (``median_area_um2``, ...), and the median of the mean intensity when
        the table has one.
    """
    if not isinstance(table, pd.DataFrame):
        raise SegNetError(f"table must be a pandas DataFrame from measure(), not {table!r}")
    out: dict = {"count": len(table)}
    size = next((c for c in table if c.startswith(("area_", "volume_"))), None)
    diam = next((c for c in table if c.startswith("equivalent_diameter_")), None)
    if size is not None:
        vals = table[size]
        out[f"median_{size}"] = float(vals.median()) if len(vals) else float("nan")
        out[f"mean_{size}"] = float(vals.mean()) if len(vals) else float("nan")
        out[f"total_{size}"] = float(vals.sum())
    if diam is not None:
        out[f"median_{diam}"] = float(table[diam].median()) if len(table) else float("nan")
    if "mean_intensity" in table:
        out["median_mean_intensity"] = (
            float(table["mean_intensity"].median()) if len(table) else float("nan")
        )
    return out


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV, whole or not at all (an existing file is replaced).

    Columns that only napari uses (``index``) are left out.

    Raises
    ------
    SegNetError
        When the file cannot be written (missing folder, no permission, ...); nothing
        is left behind then.
    """
    from .io.atomic import atomic_write

    if not isinstance(table, pd.DataFrame):
        raise SegNetError(f"table must be a pandas DataFrame, not {type(table).__name__}")
    target = Path(path)
    if target.is_dir():
        raise SegNetError(f"{target} is a folder; give a file name ending in .csv")
    data = table.drop(columns=["index"], errors="ignore")
    try:
        return atomic_write(target, lambda tmp: data.to_csv(tmp, index=False))
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise SegNetError(f"cannot write {target}: {reason}; choose another place") from None
