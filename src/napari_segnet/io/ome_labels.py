"""Writing results as OME-NGFF labels (``labels/<name>`` with ``image-label`` metadata).

The arrays are created empty and filled block by block by the job; the pyramid is made
by nearest-neighbour downsampling (every second pixel, so ids never mix); the metadata
is written through ome-zarr-py, and only at the end: until then a label is neither in
the ``labels`` list nor has ``multiscales``, so no OME-Zarr reader takes it for a finished
one, and its ``napari_segnet_complete`` attribute is False.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SegNetError
from .ome_zarr import OmeImage
from .zarr_output import COMPLETE_ATTR

_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
# Label colours (RGBA 0-255) for semantic classes 1, 2, ...; background stays transparent.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


@dataclass(frozen=True)
class LabelsLayout:
    """Shape, chunks and coordinates of the label arrays (the image's, channel axis of 1).

    Attributes
    ----------
    axes : str
        The image's axis letters (``C`` kept, with size 1).
    shape, chunks : tuple of int
        Level 0 shape and chunk edges.
    scale, translation : tuple of float
        Level 0 pixel size and position (those of the image level segmented).
    units : tuple
        Unit per axis, or None.
    factors : tuple of tuple of int
        Per level, the step along each axis from level 0 (level 0: all 1).
    """

    axes: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    units: tuple
    factors: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, image: OmeImage, block: dict[str, int]) -> LabelsLayout:
        """The labels of ``image`` with spatial chunks ``block`` (axis letter -> edge).

        As many levels as the image has (the NGFF validators ask for it). Labels of
        the full resolution follow the image's own downsampling; labels of a lower
        level halve Y and X per level.
        """
        shape = tuple(1 if a == "C" else int(s) for a, s in zip(image.axes, image.data.shape))
        chunks = tuple(min(block.get(a, 1), s) for a, s in zip(image.axes, shape))
        factors = []
        for k, lshape in enumerate(image.level_shapes):
            if image.level == 0:
                f = [max(1, round(s0 / s)) for s0, s in zip(image.level_shapes[0], lshape)]
            else:
                f = [2**k if a in "YX" else 1 for a in image.axes]
            factors.append(tuple(1 if a == "C" else int(v) for a, v in zip(image.axes, f)))
        return cls(
            image.axes,
            shape,
            chunks,
            image.scale,
            image.translation,
            image.units,
            tuple(factors),
        )

    @property
    def n_levels(self) -> int:
        return len(self.factors)

    def level_shape(self, k: int) -> tuple[int, ...]:
        return tuple(-(-s // f) for s, f in zip(self.shape, self.factors[k]))

    def level_scale(self, k: int) -> list[float]:
        return [s * f for s, f in zip(self.scale, self.factors[k])]

    def ngff_axes(self) -> list[dict]:
        out = []
        for a, u in zip(self.axes, self.units):
            ax = {"name": a.lower(), "type": _AXIS_TYPES[a]}
            if u:
                ax["unit"] = u
            out.append(ax)
        return out


def ngff_format(version: str):
    """The ome-zarr-py format object of an NGFF version."""
    from ome_zarr.format import FormatV04, FormatV05

    if version == "0.4":
        return FormatV04()
    if version == "0.5":
        return FormatV05()
    raise SegNetError(f"OME-Zarr version {version} is not supported for writing (0.4 or 0.5)")


def label_names(root) -> list[str]:
    """Names listed in ``root/labels`` metadata (finished labels)."""
    if "labels" not in root:
        return []
    attrs = dict(root["labels"].attrs)
    return list(attrs.get("ome", attrs).get("labels", []))


def label_exists(root, name: str) -> bool:
    """Whether ``labels/<name>`` exists, finished or not."""
    return "labels" in root and name in root["labels"]


def remove_label(root, name: str) -> None:
    """Delete ``labels/<name>`` and its entry in the ``labels`` list (for --overwrite)."""
    if "labels" not in root:
        return
    labels = root["labels"]
    attrs = dict(labels.attrs)
    key_ome = "ome" in attrs
    meta = dict(attrs.get("ome", attrs))
    if name in meta.get("labels", []):
        meta["labels"] = [n for n in meta["labels"] if n != name]
        if key_ome:
            labels.attrs["ome"] = meta
        else:
            labels.attrs["labels"] = meta["labels"]
    if name in labels:
        path = _local_path(root) / "labels" / name
        shutil.rmtree(path, ignore_errors=True)


def _local_path(group) -> Path:
    root = getattr(group.store, "root", None)
    if root is None:
        raise SegNetError("OME-Zarr labels are written to local folders only")
    return Path(str(root)) / group.path


def create_label(root, name: str, layout: LabelsLayout, dtype) -> list:
    """Empty level arrays of ``labels/<name>`` (not yet listed, marked incomplete)."""
    labels = root.require_group("labels")
    group = labels.require_group(name)
    group.attrs[COMPLETE_ATTR] = False
    arrays = []
    for k in range(layout.n_levels):
        shape = layout.level_shape(k)
        chunks = tuple(min(c, s) for c, s in zip(layout.chunks, shape))
        # Unwritten chunks read as the fill value 0 (background) and take no space.
        arrays.append(
            group.create_array(
                str(k),
                shape=shape,
                chunks=chunks,
                dtype=np.dtype(dtype),
                fill_value=0,
                overwrite=True,
                **_dim_names(group, layout),
            )
        )
    return arrays


def _dim_names(group, layout: LabelsLayout) -> dict:
    # Zarr v3 arrays carry their axis names, as NGFF 0.5 asks.
    if group.metadata.zarr_format == 3:
        return {"dimension_names": [a.lower() for a in layout.axes]}
    return {}


def fill_pyramid(group, layout: LabelsLayout) -> None:
    """Levels 1.. by nearest neighbour (every n-th pixel), chunk by chunk.

    Each level is read from the previous one when its step divides evenly (memory:
    a few chunks), else from level 0.
    """
    for k in range(1, layout.n_levels):
        prev = k - 1
        if any(f % p for f, p in zip(layout.factors[k], layout.factors[prev])):
            prev = 0
        step = [f // p for f, p in zip(layout.factors[k], layout.factors[prev])]
        src, dst = group[str(prev)], group[str(k)]
        grid = [range(0, s, c) for s, c in zip(dst.shape, dst.chunks)]
        for lo in itertools.product(*grid):
            hi = [min(a + c, s) for a, c, s in zip(lo, dst.chunks, dst.shape)]
            read = tuple(slice(a * f, b * f, f) for a, b, f in zip(lo, hi, step))
            dst[tuple(slice(a, b) for a, b in zip(lo, hi))] = src[read]


def publish_label(
    root,
    name: str,
    layout: LabelsLayout,
    version: str,
    *,
    classes: list[str] | None = None,
    source: dict | None = None,
) -> None:
    """Write the label's NGFF metadata (multiscales, image-label) and list it: done.

    ``classes`` (names of class ids 0, 1, ...) gives each non-background class a colour
    and a ``class`` property.
    """
    from ome_zarr.writer import add_metadata, write_label_metadata, write_multiscales_metadata

    fmt = ngff_format(version)
    group = root["labels"][name]
    datasets = [
        {
            "path": str(k),
            "coordinateTransformations": [
                {"type": "scale", "scale": layout.level_scale(k)},
                {"type": "translation", "translation": list(layout.translation)},
            ],
        }
        for k in range(layout.n_levels)
    ]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=layout.ngff_axes(), name=name)
    colors = properties = None
    if classes is not None:
        # Background transparent; the validators want a colour for every property.
        colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}] + [
            {"label-value": i, "rgba": [*_PALETTE[(i - 1) % len(_PALETTE)], 255]}
            for i in range(1, len(classes))
        ]
        properties = [{"label-value": i, "class": str(c)} for i, c in enumerate(classes)]
    extra = {"source": source} if source else {}
    if name in label_names(root):
        remove_label_entry = [n for n in label_names(root) if n != name]
        _set_label_list(root, remove_label_entry)
    write_label_metadata(
        root["labels"], name, colors=colors, properties=properties, fmt=fmt, **extra
    )
    if fmt.zarr_format == 3:
        # NGFF 0.5 puts the version in every OME group's metadata, ``labels`` too.
        add_metadata(root["labels"], {"version": fmt.version}, fmt=fmt)
    # A fresh handle: the one above holds the attributes from before image-label.
    root["labels"][name].attrs[COMPLETE_ATTR] = True


def _set_label_list(root, names: list[str]) -> None:
    labels = root["labels"]
    attrs = dict(labels.attrs)
    if "ome" in attrs:
        labels.attrs["ome"] = {**attrs["ome"], "labels": names}
    else:
        labels.attrs["labels"] = names
