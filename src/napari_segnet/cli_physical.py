"""The ``segment`` command's physical scale: pixel size in, and the same metadata out."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io.image_meta import ImageMeta, read_image_meta, write_kwargs


def _spacing_arg(value: str) -> str | tuple[float, ...]:
    """``--spacing``: ``file``, ``none``, or numbers separated by commas."""
    if value.lower() in ("file", "none"):
        return value.lower()
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give the pixel size as numbers separated by commas (Z,Y,X or one for all), "
            f"'file' or 'none', not {value!r}"
        ) from None


def add_arguments(seg: argparse.ArgumentParser) -> None:
    """``--spacing`` and ``--physical-diameter``."""
    g = seg.add_argument_group(
        "Physical scale",
        "The pixel size of TIFF inputs is read from their ImageJ, OME or resolution "
        "metadata; results keep the input's resolution, axes and ImageJ/OME metadata.",
    )
    g.add_argument(
        "--spacing",
        type=_spacing_arg,
        default="file",
        help="pixel size per Z,Y,X axis (one number: all), e.g. 2,0.65,0.65; file "
        "(default): from each TIFF's metadata; none: ignore it",
    )
    g.add_argument(
        "--physical-diameter",
        type=float,
        default=None,
        help="typical object diameter in the units of the spacing (e.g. µm); instead of --diameter",
    )


@dataclass(frozen=True)
class Physical:
    """One input's axes, spacing and metadata as the command uses them."""

    meta: ImageMeta
    axes: str | None
    spacing: tuple[float, ...] | None

    def segment_kwargs(self, args: argparse.Namespace) -> dict:
        """``segment`` keywords: axes, spacing and (when given) the physical diameter."""
        kw: dict = {"axes": self.axes, "spacing": self.spacing}
        if args.physical_diameter is not None:
            kw["physical_diameter"] = args.physical_diameter
        return kw

    def tif(self, data: np.ndarray, axes: str) -> tuple[np.ndarray, dict]:
        """A result and the ``tifffile.imwrite`` keywords that write it like the input."""
        return write_kwargs(self.meta, np.asarray(data), axes)


def physical(args: argparse.Namespace, src, image) -> Physical:
    """Axes and spacing for one input: ``--axes``/``--spacing`` first, then the file's."""
    meta = read_image_meta(src) if isinstance(src, Path) else ImageMeta()
    ndim = len(np.shape(image))
    axes = args.axes
    if axes is None and meta.axes is not None and len(meta.axes) == ndim:
        axes = meta.axes
    known = axes if axes is not None else ("YX" if ndim == 2 else None)
    spacing = None
    if isinstance(args.spacing, tuple):
        spacing = args.spacing
    elif args.spacing == "file" and known is not None:
        spacing = meta.spacing_for(known.upper())
    return Physical(meta, axes, spacing)
