"""Planning one image: the checked input, its normalisation, tiles and batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import checks
from ..errors import SegNetError
from ..models.base import SegNet
from .axes import Layout, make_layout, read_region
from .devices import resolve_device
from .geometry import Tile, border_pad, plan_tiles, roundup
from .memory import activation_bytes_per_pixel, choose_core, memory_budget, tile_pixels
from .normalize import normalization_stats, outer_positions

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def as_source(image):
    """Keep numpy, zarr and dask arrays as they are (read lazily); turn the rest into numpy.

    Raises
    ------
    SegNetError
        For None, a path, a scalar, an empty array, or a dtype other than bool,
        integer or real float (see :func:`napari_segnet.checks.array`).
    """
    return checks.array(image, "image")


def check_image(src) -> None:
    """Refuse in-memory images with NaN, infinite or beyond-float32 values.

    Lazy arrays (zarr, dask) are checked tile by tile as they are read.
    """
    checks.finite(src, "image")


@dataclass(frozen=True)
class RunOptions:
    """The engine's parameters, checked: see :func:`napari_segnet.predict`."""

    tile_size: tuple[int, ...] | None
    batch_size: int | None
    device: torch.device
    precision: str
    border: int | None

    @classmethod
    def check(cls, model: SegNet, tile_size, batch_size, device, precision, border) -> RunOptions:
        """Check every parameter before any work.

        Raises
        ------
        SegNetError
            Naming the parameter, the value and what is allowed.
        """
        checks.model(model)
        return cls(
            checks.sizes("tile_size", tile_size, model.dims, high=checks.MAX_TILE),
            checks.integer("batch_size", batch_size, low=1, optional=True),
            resolve_device(device),
            checks.one_of("precision", precision, PRECISIONS),
            checks.integer("border", border, low=0, optional=True),
        )


@dataclass
class Plan:
    """Everything the engine needs to run one image."""

    layout: Layout
    stats: np.ndarray
    tiles: list[Tile]
    core: tuple[int, ...]
    batch_size: int
    device: torch.device
    pad: int = 0


def make_plan(
    src,
    model: SegNet,
    axes: str | None,
    tile_size,
    batch_size: int | None,
    device,
    precision: str = "auto",
    border: int | None = None,
) -> Plan:
    """Check the input, compute normalisation, and lay out tiles and batches."""
    opts = RunOptions.check(model, tile_size, batch_size, device, precision, border)
    check_image(src)
    layout = make_layout(tuple(src.shape), axes, model.dims, model.in_channels)
    dev = opts.device
    stats = normalization_stats(src, layout, model.meta.get("normalization"))
    shape = layout.spatial_shape
    factor = 0.5 if (dev.type == "cuda" and precision != "float32") else 1.0
    budget = memory_budget(dev)
    pad = border_pad(model, opts.border)
    if opts.tile_size is None:
        core = choose_core(shape, model, budget, factor, pad)
    else:
        core = tuple(roundup(t, model.divisor) for t in opts.tile_size)
    # Tile centres at least the network's smallest input: tiles then never need padding
    # inside the image, which would change the result (images smaller than it still do).
    least = roundup(getattr(model, "min_size", 1), model.divisor)
    core = tuple(max(c, least) for c in core)
    outers = list(outer_positions(layout))
    tiles, core = plan_tiles(
        (0,) * model.dims, shape, core, model.divisor, outers, halo=model.halo, pad=pad, shape=shape
    )
    tile_bytes = tile_pixels(core, shape, model, pad) * activation_bytes_per_pixel(model)
    if tile_bytes * factor > 4 * budget:
        raise SegNetError(
            f"one tile needs about {tile_bytes * factor / 2**30:.1f} GiB but only "
            f"{budget / 2**30:.1f} GiB are free on {dev}: the model's receptive field "
            f"(halo {model.halo} px) is too large for this device; use a smaller tile_size, "
            "or a model with smaller dilation rates / pool_size"
        )
    batch_size = opts.batch_size
    if batch_size is None:
        # On the CPU one large tile at a time is fastest (batches only add memory
        # traffic); accelerators get as many tiles as fit.
        fit = int(np.clip(budget // max(tile_bytes * factor, 1), 1, 32))
        batch_size = 1 if dev.type == "cpu" else fit
    return Plan(layout, stats, tiles, core, min(batch_size, max(len(tiles), 1)), dev, pad)


def stats_at(stats: np.ndarray, outer: tuple[int, ...]) -> np.ndarray:
    return stats[outer] if outer else stats


def tile_reader(src, plan: Plan, model: SegNet, origin=None, outer_offset=None):
    """A function that reads one tile's raw input (mirrored past the border) and its
    ``(C, 2)`` normalisation offsets and scales."""

    def read(t: Tile) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = t.in_lo, t.in_hi
        o = t.outer if outer_offset is None else tuple(a - b for a, b in zip(t.outer, outer_offset))
        block = read_region(src, plan.layout, o, lo, hi, origin)
        checks.finite(block, "image")
        return block, stats_at(plan.stats, t.outer)

    return read
