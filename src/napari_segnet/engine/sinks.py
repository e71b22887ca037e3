"""Where finished tile centres go: one writer for numpy, zarr and dask-block outputs."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from .axes import Layout
from .geometry import Tile


class Sink(Protocol):
    """Anything the runner can hand finished tiles to."""

    def write(self, tile: Tile, probabilities: np.ndarray) -> None:
        """Store one tile's written region: ``(C, *region)`` class probabilities."""


class ArraySink:
    """Writes tile centres into arrays laid out like ``layout.out_axes``.

    Parameters
    ----------
    layout : Layout
        The input's layout; its ``out_axes`` order the outputs' non-class axes.
    probabilities : array-like, optional
        numpy or zarr array for the probabilities, with the class axis at
        ``class_axis`` (0 for whole images; after the outer axes for dask blocks).
    semantic : array-like, optional
        Array for the class ids (argmax), laid out like ``layout.out_shape``.
    class_axis : int
        Position of the class axis in ``probabilities``.
    outer_offset, region_offset : tuple of int, optional
        Where the arrays start in the image, when they hold one block of it.
    """

    def __init__(
        self,
        layout: Layout,
        probabilities=None,
        semantic=None,
        *,
        class_axis: int = 0,
        outer_offset: tuple[int, ...] | None = None,
        region_offset: tuple[int, ...] | None = None,
    ):
        self.layout = layout
        self.probabilities = probabilities
        self.semantic = semantic
        self.class_axis = class_axis
        self.outer_offset = outer_offset
        self.region_offset = region_offset

    def write(self, tile: Tile, probabilities: np.ndarray) -> None:
        idx = out_index(self.layout, tile, self.outer_offset, self.region_offset)
        if self.probabilities is not None:
            k = self.class_axis
            parallel_assign(self.probabilities, (*idx[:k], slice(None), *idx[k:]), probabilities)
        if self.semantic is not None:
            self.semantic[idx] = class_ids(probabilities).astype(self.semantic.dtype, copy=False)


def class_ids(probabilities: np.ndarray) -> np.ndarray:
    """The class per pixel of ``(C, ...)`` probabilities: the argmax, or for a single
    channel (a foreground probability, as some bioimage.io models give) above 0.5."""
    if probabilities.shape[0] == 1:
        return (probabilities[0] > 0.5).astype(np.uint8)
    return probabilities.argmax(0)


def out_index(layout: Layout, t: Tile, outer_offset=None, region_offset=None) -> tuple:
    """Index of a tile's written region in an output laid out like ``layout.out_axes``."""
    n = len(layout.out_shape)
    idx: list = [slice(None)] * n
    for ax, i, k in zip(layout.outer, t.outer, range(len(t.outer))):
        idx[layout.out_position(ax)] = i - (outer_offset[k] if outer_offset else 0)
    for k, ax in enumerate(layout.spatial):
        off = region_offset[k] if region_offset else 0
        idx[layout.out_position(ax)] = slice(t.write_lo[k] - off, t.write_hi[k] - off)
    return tuple(idx)


_COPY_THREADS = min(8, os.cpu_count() or 1)
_COPY_POOL = ThreadPoolExecutor(_COPY_THREADS) if _COPY_THREADS > 1 else None


def parallel_assign(dst, index: tuple, src: np.ndarray) -> None:
    """``dst[index] = src``, split over threads for large numpy outputs.

    numpy releases the GIL while copying, and a GPU fills a tile faster than one
    thread can copy it (and fault in the fresh output pages) on the host.
    """
    axis = int(np.argmax(src.shape))
    if _COPY_POOL is None or not isinstance(dst, np.ndarray) or src.size < 2**22:
        dst[index] = src
        return
    view = dst[index]
    bounds = np.linspace(0, src.shape[axis], _COPY_THREADS + 1).astype(int)

    def part(k: int) -> None:
        sel = (slice(None),) * axis + (slice(bounds[k], bounds[k + 1]),)
        view[sel] = src[sel]

    list(_COPY_POOL.map(part, range(_COPY_THREADS)))


def semantic_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds class ids ``0..n_classes-1``."""
    return np.dtype(np.uint8 if n_classes <= 256 else np.uint16)
