"""Tile geometry of the overlap-tile scheme (Ronneberger et al. 2015, Fig. 2).

The image is mirrored at its border only; inside, neighbouring tiles give each other
real context. Each tile is its valid centre (``core``) plus the model's ``halo`` on
every side, and tile origins sit on multiples of the model's ``divisor`` in the
coordinates of the mirror-padded image. With the halo at least the receptive-field
radius, every centre equals the untiled result, so tile size never changes the
output. Each centre is written once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import SegNetError
from ..models.base import SegNet


def roundup(n: int, m: int) -> int:
    """``n`` rounded up to a multiple of ``m``."""
    return int(math.ceil(n / m) * m)


def axis_starts(a: int, b: int, core: int, divisor: int) -> tuple[list[int], int]:
    """Core starts covering ``[a, b)`` (``a`` a multiple of ``divisor``) with cores of ``core``.

    The last core is moved back so it ends at the next multiple of ``divisor`` past
    ``b`` instead of running far beyond the image: all tiles keep one shape (for
    batching) and every start stays on the divisor grid.
    """
    full = roundup(b - a, divisor)
    core = min(roundup(core, divisor), full)
    n = math.ceil((b - a) / core)
    starts = [a + i * core for i in range(n)]
    starts[-1] = min(starts[-1], a + full - core)
    return starts, core


@dataclass(frozen=True)
class Tile:
    """One tile: the input it reads, its centre, and which part of the centre it writes.

    All coordinates are image coordinates; the input may reach past the image
    border, where it is mirrored.
    """

    outer: tuple[int, ...]
    start: tuple[int, ...]  # centre start
    write_lo: tuple[int, ...]  # written region
    write_hi: tuple[int, ...]
    in_lo: tuple[int, ...]  # input region read (centre plus halo, cut at the padded border)
    in_hi: tuple[int, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.in_lo, self.in_hi))


def border_pad(model: SegNet, border: int | None = None) -> int:
    """Mirror padding at the image border: a multiple of the divisor, at most the halo.

    None: 32 px (at least two divisors). The whole halo (``border=model.halo``) gives
    every border pixel full mirrored context, as in the UNet paper; less is faster on
    small images, and beyond the padding the network sees its own zero padding.
    Either way the result is the same for every tile size.
    """
    d, h = model.divisor, model.halo
    if border is None:
        border = max(32, 2 * d)
    if border < 0:
        raise SegNetError("border must not be negative")
    return int(min(roundup(int(border), d), h))


def plan_tiles(
    region_lo: Sequence[int],
    region_hi: Sequence[int],
    core: Sequence[int],
    divisor: int,
    outers: Sequence[tuple[int, ...]],
    *,
    halo: int,
    pad: int,
    shape: Sequence[int],
) -> tuple[list[Tile], tuple[int, ...]]:
    """All tiles that cover a region at every outer position, each pixel written once.

    A tile reads its centre plus ``halo`` on each side, but never beyond the padded
    image ``[-pad, roundup(shape, divisor) + pad)``: there the untiled pass would
    see the network's zero padding, so the tile stops there too and sees the same.
    Tiles are sorted by input shape, so equal shapes batch together.
    """
    per_axis, cores = [], []
    for a, b, c, n in zip(region_lo, region_hi, core, shape):
        starts, c = axis_starts(int(a), int(b), int(c), divisor)
        end = roundup(int(n), divisor) + pad
        spans = []
        for i, st in enumerate(starts):
            lo = st if i == 0 else max(st, starts[i - 1] + c)
            spans.append(
                (st, lo, min(st + c, int(b)), max(st - halo, -pad), min(st + c + halo, end))
            )
        per_axis.append(spans)
        cores.append(c)
    tiles = []
    for o in outers:
        for combo in itertools.product(*per_axis):
            tiles.append(Tile(tuple(o), *(tuple(x[k] for x in combo) for k in range(5))))
    tiles.sort(key=lambda t: t.in_shape)
    return tiles, tuple(cores)
