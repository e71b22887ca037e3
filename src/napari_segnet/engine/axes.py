"""Axes strings: parsing, guessing, and reading regions of an array in a fixed layout."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SegNetError

AXES_LETTERS = "TZCYX"

GUESS_RULE = """\
axes=None is guessed from the number of dimensions:
  2D: "YX"
  3D: "YXC" if the last dimension is 3 or 4 (RGB/RGBA) or equals the model's channels (>1);
      "CYX" if the first dimension equals the model's channels (>1); otherwise "ZYX"
  4D: "ZYXC" if the last dimension is 3 or 4 or the model's channels (>1);
      "CZYX" if the first equals the model's channels (>1); otherwise "TZYX"
  5D: "TZYXC" if the last dimension is 3 or 4 or the model's channels (>1), otherwise "TZCYX"
Give axes explicitly whenever the guess could be wrong."""


def guess_axes(shape: tuple[int, ...], in_channels: int = 1) -> str:
    """Guess an axes string for an array shape; see ``GUESS_RULE``."""
    nd = len(shape)

    def chan(n: int) -> bool:
        return n in (3, 4) or (in_channels > 1 and n == in_channels)

    if nd == 2:
        return "YX"
    if nd == 3:
        if chan(shape[-1]) and min(shape[:2]) > 4:
            return "YXC"
        if in_channels > 1 and shape[0] == in_channels:
            return "CYX"
        return "ZYX"
    if nd == 4:
        if chan(shape[-1]):
            return "ZYXC"
        if in_channels > 1 and shape[0] == in_channels:
            return "CZYX"
        return "TZYX"
    if nd == 5:
        return "TZYXC" if chan(shape[-1]) else "TZCYX"
    raise SegNetError(
        f"cannot handle a {nd}-dimensional image of shape {shape}; give 2D to 5D data"
    )


@dataclass(frozen=True)
class Layout:
    """Where each kind of axis sits in the input, for a model of ``dims`` spatial dims.

    ``outer`` axes are iterated over (time, and Z for a 2D model); ``spatial`` axes
    go through the network; ``channel`` is the colour/channel axis or None.
    """

    axes: str
    shape: tuple[int, ...]
    outer: tuple[int, ...]
    spatial: tuple[int, ...]
    channel: int | None
    time: int | None

    @property
    def out_axes(self) -> str:
        """Axes of the outputs: the input's axes without the channel axis."""
        return "".join(a for a in self.axes if a != "C")

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(s for i, s in enumerate(self.shape) if i != self.channel)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.spatial)

    @property
    def outer_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.outer)

    @property
    def n_channels(self) -> int:
        return 1 if self.channel is None else self.shape[self.channel]

    def out_position(self, axis: int) -> int:
        """Position of input axis ``axis`` among the output axes."""
        return axis - (1 if self.channel is not None and axis > self.channel else 0)


def make_layout(shape: tuple[int, ...], axes: str | None, dims: int, in_channels: int) -> Layout:
    """Check an axes string against a shape and a model; guess it if None.

    Raises
    ------
    SegNetError
        On unknown or repeated letters, a length that does not match the shape, no
        Y/X, a 3D model without Z, or a channel count the model does not take.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0 or min(shape) == 0:
        raise SegNetError(f"the image is empty (shape {shape})")
    if axes is None:
        axes = guess_axes(shape, in_channels)
    if not isinstance(axes, str):
        raise SegNetError(f"axes must be a string like 'YX' or 'ZYX', not {axes!r}")
    axes = axes.upper().replace("S", "C")
    bad = set(axes) - set(AXES_LETTERS)
    if bad:
        raise SegNetError(f"axes {axes!r} has unknown letters {sorted(bad)}; use {AXES_LETTERS}")
    if len(set(axes)) != len(axes):
        raise SegNetError(f"axes {axes!r} repeats a letter")
    if len(axes) != len(shape):
        raise SegNetError(
            f"axes {axes!r} has {len(axes)} letters but the image has {len(shape)} dimensions "
            f"(shape {shape})"
        )
    if "Y" not in axes or "X" not in axes:
        raise SegNetError(f"axes {axes!r} must contain Y and X")
    if dims == 3 and "Z" not in axes:
        raise SegNetError(f"a 3D model needs a Z axis, but the axes are {axes!r}")
    spatial_letters = "ZYX" if dims == 3 else "YX"
    spatial = tuple(i for i, a in enumerate(axes) if a in spatial_letters)
    outer = tuple(i for i, a in enumerate(axes) if a in "TZ" and i not in spatial)
    channel = axes.index("C") if "C" in axes else None
    n_ch = 1 if channel is None else shape[channel]
    if n_ch != in_channels:
        if in_channels == 1 and n_ch in (3, 4):
            raise SegNetError(
                f"the image has {n_ch} channels (RGB?) but the model expects a grey image; "
                "pick one channel or convert to grey first"
            )
        raise SegNetError(f"the image has {n_ch} channel(s) but the model expects {in_channels}")
    time = axes.index("T") if "T" in axes else None
    return Layout(axes, shape, outer, spatial, channel, time)


def mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions onto ``[0, n)`` by mirroring at the ends (numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m >= n, period - m, m)


def read_region(
    src,
    layout: Layout,
    outer_index: tuple[int, ...],
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    origin: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Read ``[lo, hi)`` of the spatial axes at one outer position, mirrored outside the image.

    Parameters
    ----------
    src : array-like
        The image (numpy, zarr, dask) or, with ``origin``, a block of it.
    layout : Layout
        The image's layout (its full shape, even when ``src`` is a block).
    outer_index : tuple of int
        Position along the outer axes (in ``src``'s own coordinates).
    lo, hi : tuple of int
        Spatial region in image coordinates; may extend past the image border.
    origin : tuple of int, optional
        Image coordinates of ``src``'s first spatial element when ``src`` is a block.

    Returns
    -------
    numpy.ndarray
        ``(C, *region)`` in the source dtype.
    """
    origin = origin or (0,) * len(layout.spatial)
    index: list = [slice(None)] * len(layout.shape)
    for ax, i in zip(layout.outer, outer_index):
        index[ax] = i
    takes, pads = [], []
    for k, ax in enumerate(layout.spatial):
        n = layout.shape[ax]
        inner = min(hi[k], n) - max(lo[k], 0)
        before, after = max(-lo[k], 0), max(hi[k] - n, 0)
        if inner > max(before, after):
            # One reflection at each end at most: a slice plus np.pad (one copy).
            index[ax] = slice(max(lo[k], 0) - origin[k], min(hi[k], n) - origin[k])
            takes.append(None)
            pads.append((before, after))
            continue
        idx = mirror_index(np.arange(lo[k], hi[k]), n) - origin[k]
        a, b = int(idx.min()), int(idx.max()) + 1
        index[ax] = slice(a, b)
        rel = idx - a
        takes.append(None if np.array_equal(rel, np.arange(b - a)) else rel)
        pads.append((0, 0))
    block = np.asarray(src[tuple(index)])
    # Remaining axes of the block are channel and spatial, in input order.
    remaining = [ax for ax in range(len(layout.shape)) if ax not in layout.outer]
    if layout.channel is None:
        block = block[None]
    else:
        block = np.moveaxis(block, remaining.index(layout.channel), 0)
    for k, t in enumerate(takes):
        if t is not None:
            block = np.take(block, t, axis=k + 1)
    if any(p != (0, 0) for p in pads):
        block = np.pad(block, [(0, 0), *pads], mode="reflect")
    return block
