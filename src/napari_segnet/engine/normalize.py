"""Intensity normalisation as recorded in a model."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .. import checks
from ..options import Normalization
from .axes import Layout

_MAX_SAMPLES = 4_000_000


def _subsample(src, layout: Layout, fixed: dict[int, int]) -> np.ndarray:
    """A strided sample (at most ~4M values per channel) with some axes fixed."""
    index: list = [slice(None)] * len(layout.shape)
    free = [ax for ax in range(len(layout.shape)) if ax not in fixed and ax != layout.channel]
    n = int(np.prod([layout.shape[ax] for ax in free])) if free else 1
    step = max(1, int(np.ceil((n / _MAX_SAMPLES) ** (1 / max(len(free), 1)))))
    for ax in free:
        index[ax] = slice(None, None, step)
    for ax, i in fixed.items():
        index[ax] = i
    sample = np.asarray(src[tuple(index)])
    if layout.channel is None:
        return sample.reshape(1, -1)
    remaining = [ax for ax in range(len(layout.shape)) if ax not in fixed]
    return np.moveaxis(sample, remaining.index(layout.channel), 0).reshape(layout.n_channels, -1)


def normalization_stats(
    src, layout: Layout, spec: Normalization | dict[str, Any] | None
) -> np.ndarray:
    """Per outer position and channel: the ``(offset, scale)`` that normalise the image.

    Percentile normalisation maps the ``low`` percentile to 0 and the ``high`` one to 1,
    per time point (when there is a T axis) and per channel, over all other axes;
    ``"meanstd"`` gives zero mean and unit standard deviation over the same values.

    Returns
    -------
    numpy.ndarray
        ``(*outer_shape, C, 2)`` float64 array of offsets and scales.
    """
    norm = spec if isinstance(spec, Normalization) else Normalization.from_dict(spec)
    out = np.zeros((*layout.outer_shape, layout.n_channels, 2))
    out[..., 1] = 1.0
    if norm.kind == "none":
        return out
    if norm.kind == "fixed":
        out[..., 0] = norm.offset
        out[..., 1] = norm.scale
        return out
    lo_p, hi_p = norm.low, norm.high
    t_pos = layout.outer.index(layout.time) if layout.time in layout.outer else None
    t_values = range(layout.shape[layout.time]) if layout.time is not None else [None]
    for t in t_values:
        fixed = {} if t is None else {layout.time: t}
        sample = _subsample(src, layout, fixed).astype(np.float64, copy=False)
        checks.finite(sample, "image")
        if norm.kind == "meanstd":
            # bioimage.io's zero_mean_unit_variance: (x - mean) / (std + 1e-6)
            lo, scale = sample.mean(axis=1), 1.0 / (sample.std(axis=1) + 1e-6)
        else:
            lo, hi = np.percentile(sample, [lo_p, hi_p], axis=1)
            scale = 1.0 / np.maximum(hi - lo, 1e-6 * np.maximum(np.abs(hi), 1.0))
        if t_pos is None:
            out[..., 0] = lo
            out[..., 1] = scale
        else:
            sel = [slice(None)] * len(layout.outer)
            sel[t_pos] = t
            out[(*tuple(sel), slice(None), 0)] = lo
            out[(*tuple(sel), slice(None), 1)] = scale
    return out


def apply_normalization(block: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Normalise a ``(C, ...)`` block with ``(C, 2)`` offsets and scales, as float32."""
    x = block.astype(np.float32, copy=True)
    shape = (-1,) + (1,) * (x.ndim - 1)
    x -= stats[:, 0].astype(np.float32).reshape(shape)
    x *= stats[:, 1].astype(np.float32).reshape(shape)
    return x


def outer_positions(layout: Layout):
    """All positions along the outer axes, in C order."""
    return itertools.product(*(range(n) for n in layout.outer_shape))
