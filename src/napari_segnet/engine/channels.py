"""Matching an image's channels to a model's: RGB to grey, grey to three channels."""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import SegNetWarning
from .axes import guess_axes

# ITU-R BT.709 luminance weights, as in skimage.color.rgb2gray.
LUMINANCE = (0.2125, 0.7154, 0.0721)


def _channel_axis(axes: str) -> int | None:
    return axes.index("C") if "C" in axes else None


def to_grey(src, axis: int):
    """Luminance (BT.709) of the first three channels along ``axis``, as float32.

    numpy and dask inputs stay numpy and dask; zarr is read channel by channel.
    """

    def channel(i: int):
        index = [slice(None)] * len(src.shape)
        index[axis] = i
        plane = src[tuple(index)]
        return plane if hasattr(plane, "dask") else np.asarray(plane)

    grey = sum(w * channel(i).astype(np.float32) for i, w in enumerate(LUMINANCE))
    return grey.astype(np.float32)


def repeat_channels(src, n: int, axis: int | None):
    """A grey image with ``n`` identical channels last (a broadcast view, no copy).

    ``axis`` is an existing channel axis of length 1, removed first, or None.
    """
    if axis is not None:
        index = [slice(None)] * len(src.shape)
        index[axis] = 0
        src = src[tuple(index)]
    if not hasattr(src, "dask"):
        src = np.asarray(src)
    return np.broadcast_to(src[..., None], (*src.shape, n))


def match_channels(src, axes: str | None, in_channels: int) -> tuple[object, str | None, str]:
    """Convert an RGB(A) image for a grey model, or a grey image for a 3-channel model.

    Parameters
    ----------
    src : array-like
        The image (numpy, dask or zarr); never modified.
    axes : str, optional
        Its axes (guessed as :func:`make_layout` would when None).
    in_channels : int
        The channels the model takes.

    Returns
    -------
    image, axes, note
        The image to segment, its axes, and what was done (``""``: nothing; the input
        and ``axes`` are returned as given). Any other mismatch is left for
        :func:`make_layout` to refuse.

    Warns
    -----
    SegNetWarning
        When the image was converted.
    """
    shape = tuple(int(s) for s in src.shape)
    full = guess_axes(shape, in_channels) if axes is None else axes
    if not isinstance(full, str) or len(full) != len(shape):
        return src, axes, ""
    full = full.upper().replace("S", "C")
    axis = _channel_axis(full)
    n = 1 if axis is None else shape[axis]
    if n == in_channels:
        return src, axes, ""
    if in_channels == 1 and n in (3, 4) and axis is not None:
        note = (
            f"the image has {n} channels but the model takes a grey image: "
            "converted to grey (luminance 0.2125 R + 0.7154 G + 0.0721 B"
            + (", alpha ignored)" if n == 4 else ")")
        )
        image, new_axes = to_grey(src, axis), full.replace("C", "")
    elif in_channels == 3 and n == 1:
        note = "the image is grey but the model takes 3 channels: the grey channel repeated 3 times"
        image, new_axes = repeat_channels(src, 3, axis), full.replace("C", "") + "C"
    else:
        return src, axes, ""
    warnings.warn(note, SegNetWarning, stacklevel=3)
    return image, new_axes, note
