"""Pixel size, unit and axes of TIFF files, read with tifffile and written back with results.

Three places hold a TIFF's physical scale: ImageJ's description (``spacing`` and
``unit``, Z) with the XResolution/YResolution tags (pixels per unit, Y and X); OME-XML
(``PhysicalSizeX/Y/Z`` and their units); and, in any TIFF, the resolution tags with
ResolutionUnit. Results are written in the input's flavour, so ImageJ, Fiji or an OME
reader show them at the same scale and with the same axes as the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Micrometres per TIFF ResolutionUnit (2: inch, 3: centimetre).
UM_PER_UNIT = {2: 25400.0, 3: 10000.0}
# tifffile's axis letters mapped to napari-segnet's (S: samples, e.g. RGB).
LETTERS = {"T": "T", "Z": "Z", "C": "C", "S": "C", "Y": "Y", "X": "X"}
# ImageJ hyperstacks keep their axes in this order.
IMAGEJ_ORDER = "TZCYXS"


@dataclass(frozen=True)
class ImageMeta:
    """What a TIFF says about its axes and pixel size.

    Attributes
    ----------
    kind : str
        ``"imagej"``, ``"ome"``, ``"tiff"`` (resolution tags only) or ``"none"``.
    axes : str or None
        The image's axes in T, Z, C, Y, X letters; None when the file does not say.
    spacing : dict or None
        Pixel size per axis letter (``{"Z": 2.0, "Y": 0.65, "X": 0.65}``), in ``unit``;
        None when the file records none.
    unit : str or None
        The unit as the file spells it (``"um"``, ``"micron"``, ``"µm"``, ...).
    resolution : tuple or None
        The XResolution and YResolution tags (pixels per resolution unit), as read.
    resolution_unit : int or None
        The ResolutionUnit tag (1 none, 2 inch, 3 centimetre).
    extra : dict
        ImageJ metadata worth carrying over (e.g. ``finterval``, ``origin``).
    """

    kind: str = "none"
    axes: str | None = None
    spacing: dict[str, float] | None = None
    unit: str | None = None
    resolution: tuple[float, float] | None = None
    resolution_unit: int | None = None
    extra: dict = field(default_factory=dict)

    def spacing_for(self, axes: str) -> tuple[float, ...] | None:
        """The spacing of ``axes``' Z, Y and X axes in order, or None when one is unknown.

        A missing Z spacing reads as the in-plane one (a 2D model then stitches slices
        as if voxels were cubic).
        """
        if self.spacing is None or "Y" not in self.spacing or "X" not in self.spacing:
            return None
        plane = math.sqrt(self.spacing["Y"] * self.spacing["X"])
        return tuple(self.spacing.get(a, plane) for a in axes if a in "ZYX")


def _axes(series_axes: str) -> str | None:
    """tifffile's axes in our letters; None when they hold one we cannot name (I, Q, ...)."""
    if not all(a in LETTERS for a in series_axes):
        return None
    axes = "".join(LETTERS[a] for a in series_axes)
    return axes if len(set(axes)) == len(axes) else None


def _rational(value) -> float:
    if isinstance(value, tuple):
        num, den = value
        return float(num) / float(den) if den else 0.0
    return float(value)


def _ome(xml: str) -> tuple[dict[str, float], str | None]:
    """``PhysicalSizeX/Y/Z`` of the first image, and the X unit (OME's default: µm)."""
    import tifffile

    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    pixels = (image[0] if isinstance(image, list) else image).get("Pixels", {})
    spacing = {}
    for a in "ZYX":
        v = pixels.get(f"PhysicalSize{a}")
        if v is not None and float(v) > 0:
            spacing[a] = float(v)
    return spacing, str(pixels.get("PhysicalSizeXUnit", "µm"))


def read_image_meta(path: str | Path) -> ImageMeta:
    """Axes and pixel size of a TIFF file (``kind="none"`` for other files or no record).

    ImageJ and OME files give a spacing in their own unit. For other TIFFs the
    resolution tags give one in µm only with ResolutionUnit centimetre: the inch unit
    usually holds a screen or print resolution (72 or 300 dpi), not a pixel size.
    The resolution tags themselves are always kept for writing results.
    """
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        return ImageMeta()
    import tifffile

    try:
        with tifffile.TiffFile(p) as tf:
            series = tf.series[0]
            page = tf.pages[0]
            axes = _axes(series.axes)
            tags = page.tags
            res = None
            if "XResolution" in tags and "YResolution" in tags:
                res = (_rational(tags["XResolution"].value), _rational(tags["YResolution"].value))
            unit_tag = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else None
            plane = {}
            if res is not None and res[0] > 0 and res[1] > 0:
                plane = {"Y": 1.0 / res[1], "X": 1.0 / res[0]}
            if tf.is_ome and tf.ome_metadata:
                spacing, unit = _ome(tf.ome_metadata)
                if "X" in spacing and "Y" not in spacing:
                    spacing["Y"] = spacing["X"]
                return ImageMeta("ome", axes, spacing or None, unit, res, unit_tag)
            if tf.is_imagej:
                ij = tf.imagej_metadata or {}
                unit = ij.get("unit")
                unit = None if unit in (None, "", "pixel", "pixels") else str(unit)
                spacing = dict(plane) if unit is not None and plane else {}
                if spacing and ij.get("spacing"):
                    spacing["Z"] = float(ij["spacing"])
                extra = {k: ij[k] for k in ("finterval", "fps", "origin") if k in ij}
                return ImageMeta("imagej", axes, spacing or None, unit, res, unit_tag, extra)
            if plane and unit_tag == 3:
                spacing = {a: v * UM_PER_UNIT[3] for a, v in plane.items()}
                return ImageMeta("tiff", axes, spacing, "µm", res, unit_tag)
            return ImageMeta("tiff" if res else "none", axes, None, None, res, unit_tag)
    except Exception:
        # The pixels are read (and their errors reported) elsewhere; no scale here.
        return ImageMeta()


def _imagej_data(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """``data`` in ImageJ's axis order and a dtype ImageJ stores (int ids as uint16/float32)."""
    order = sorted(range(len(axes)), key=lambda i: IMAGEJ_ORDER.index(axes[i]))
    data = np.transpose(data, order)
    axes = "".join(axes[i] for i in order)
    if data.dtype.kind in "iub" and data.dtype not in (np.uint8, np.uint16):
        fits = data.size == 0 or (int(data.min()) >= 0 and int(data.max()) <= 65535)
        data = data.astype(np.uint16 if fits else np.float32)
    elif data.dtype.kind == "f" and data.dtype != np.float32:
        data = data.astype(np.float32)
    return data, axes


def write_kwargs(meta: ImageMeta, data: np.ndarray, axes: str) -> tuple[np.ndarray, dict]:
    """The array and ``tifffile.imwrite`` keywords that write ``data`` like the input.

    Parameters
    ----------
    meta : ImageMeta
        What the input recorded.
    data : numpy.ndarray
        A result (its axes ``axes``, e.g. ``"ZYX"``; probabilities ``"CZYX"``).
    axes : str
        Its axes, in T, Z, C, Y, X letters.

    Returns
    -------
    data, kwargs
        ImageJ files get ImageJ hyperstacks (axes in ImageJ's order, label ids as
        uint16, or float32 past 65535), OME files OME-TIFF, others a TIFF whose
        description holds the axes; each keeps the input's resolution tags and unit.
    """
    kw: dict = {}
    if meta.resolution is not None:
        kw["resolution"] = meta.resolution
        if meta.resolution_unit is not None:
            kw["resolutionunit"] = meta.resolution_unit
    spacing = meta.spacing or {}
    if meta.kind == "imagej" and set(axes) <= set(IMAGEJ_ORDER):
        data, axes = _imagej_data(data, axes)
        md: dict = {"axes": axes, **meta.extra}
        if meta.unit is not None:
            md["unit"] = meta.unit
        if "Z" in spacing:
            md["spacing"] = spacing["Z"]
        kw.pop("resolutionunit", None)  # ImageJ keeps the unit in its description
        return data, {**kw, "imagej": True, "metadata": md}
    if meta.kind == "ome":
        md = {"axes": axes}
        for a in "ZYX":
            if a in spacing and a in axes:
                md[f"PhysicalSize{a}"] = spacing[a]
                if meta.unit:
                    md[f"PhysicalSize{a}Unit"] = meta.unit
        return data, {**kw, "ome": True, "metadata": md}
    return data, {**kw, "metadata": {"axes": axes}}
