"""Reading OME-Zarr (OME-NGFF) images: one resolution level, lazily, with its axes and scale."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SegNetError

# NGFF axis names napari-segnet understands, as its own axis letters.
_AXIS_LETTERS = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


@dataclass(frozen=True)
class OmeImage:
    """One resolution level of an OME-Zarr image.

    Attributes
    ----------
    path : Path
        The image group.
    level : int
        The resolution level read (0: full resolution).
    data : dask.array.Array
        The level's pixels, read lazily from the store (opened read-only).
    array_path : str
        The level's array inside the group (e.g. ``"0"`` or ``"s0"``).
    axes : str
        napari-segnet axis letters, e.g. ``"CZYX"``.
    scale : tuple of float
        Physical size of one pixel of this level along each axis.
    translation : tuple of float
        Physical position of this level's first pixel.
    units : tuple of str or None
        Unit per axis as the metadata gives it.
    level_shapes : tuple of tuple of int
        The shape of every resolution level.
    version : str
        The NGFF version of the metadata (``"0.4"``, ``"0.5"``).
    """

    path: Path
    level: int
    data: object
    array_path: str
    axes: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    units: tuple[str | None, ...]
    level_shapes: tuple[tuple[int, ...], ...]
    version: str

    @property
    def n_levels(self) -> int:
        """Number of resolution levels in the image."""
        return len(self.level_shapes)

    @property
    def spatial_scale(self) -> dict[str, float]:
        """Pixel size per spatial axis letter (``Z``, ``Y``, ``X``)."""
        return {a: s for a, s in zip(self.axes, self.scale) if a in "ZYX"}

    @property
    def anisotropy(self) -> float:
        """Z spacing over Y spacing (1 without a Z axis)."""
        sc = self.spatial_scale
        return float(sc["Z"] / sc["Y"]) if "Z" in sc and sc.get("Y") else 1.0


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr group with OME-NGFF ``multiscales`` metadata."""
    import zarr

    p = Path(path)
    if not p.is_dir():
        return False
    try:
        g = zarr.open_group(str(p), mode="r")
    except Exception:
        return False
    attrs = dict(g.attrs)
    return "multiscales" in attrs.get("ome", attrs)


def read_ome_zarr(path: str | os.PathLike, level: int = 0) -> OmeImage:
    """Open one resolution level of an OME-Zarr image, read-only and lazily.

    Parameters
    ----------
    path : str or path
        The image group (the folder holding ``zarr.json`` or ``.zattrs``).
    level : int
        Resolution level; 0 is full resolution.

    Returns
    -------
    OmeImage

    Raises
    ------
    SegNetError
        When the path is not an OME-Zarr image, the level does not exist, or an
        axis is not one of t, c, z, y, x.
    """
    try:
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Multiscales, Reader
    except ImportError:
        raise SegNetError(
            'reading OME-Zarr needs ome-zarr-py: pip install "napari-segnet[ome-zarr]"'
        ) from None

    p = Path(path)
    if not is_ome_zarr(p):
        raise SegNetError(
            f"{p} is not an OME-Zarr image (a zarr group with 'multiscales' metadata); "
            "give the image group, e.g. image.ome.zarr or image.ome.zarr/0 for a plate field"
        )
    loc = parse_url(str(p), mode="r")
    nodes = [n for n in Reader(loc)() if any(isinstance(s, Multiscales) for s in n.specs)]
    if not nodes:
        raise SegNetError(f"{p}: no multiscale image found")
    node = nodes[0]
    n_levels = len(node.data)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < n_levels:
        raise SegNetError(f"level must be an integer from 0 to {n_levels - 1}, not {level!r}")
    meta = node.metadata
    names = [a["name"] if isinstance(a, dict) else str(a) for a in meta.get("axes", [])]
    ndim = node.data[level].ndim
    if not names:  # NGFF before 0.3 has no axes: always (t, c, z, y, x)
        names = ["t", "c", "z", "y", "x"][-ndim:]
    bad = [n for n in names if n.lower() not in _AXIS_LETTERS]
    if bad:
        raise SegNetError(f"{p}: axes {bad} are not supported (only t, c, z, y, x)")
    units = tuple(a.get("unit") if isinstance(a, dict) else None for a in meta.get("axes", []))
    scale, translation = _transform(meta.get("coordinateTransformations"), level, ndim)
    spec = next(s for s in node.specs if isinstance(s, Multiscales))
    return OmeImage(
        path=p,
        level=level,
        data=node.data[level],
        array_path=str(spec.datasets[level]),
        axes="".join(_AXIS_LETTERS[n.lower()] for n in names),
        scale=scale,
        translation=translation,
        units=units or (None,) * ndim,
        level_shapes=tuple(tuple(int(n) for n in d.shape) for d in node.data),
        version=str(loc.fmt.version),
    )


def _transform(transforms, level: int, ndim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The scale and translation of one level (identity where the metadata has none)."""
    scale, shift = [1.0] * ndim, [0.0] * ndim
    for t in (transforms or [[]] * (level + 1))[level] or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = [float(v) for v in t["scale"]]
        elif t.get("type") == "translation" and "translation" in t:
            shift = [float(v) for v in t["translation"]]
    return tuple(scale), tuple(shift)
