"""Checks of public arguments, made once at the entry of each public function.

Every check raises a :class:`~napari_segnet.errors.SegNetError` whose message names
the parameter, the value given and what is allowed, before any work is done, so a
bad argument never reaches numpy, dask or torch. The engine, the post-processing,
the CLI and the panels share these rules.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import NotAModelError, SegNetError

# Largest tile edge accepted: tiles are clipped to the image, so larger values only
# risk overflowing the index arithmetic.
MAX_TILE = 2**20
# Images must fit float32 (the network's input type) after normalisation.
FLOAT32_MAX = float(np.finfo(np.float32).max)
IMAGE_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a finite float within ``[low, high]`` (``(low, high]`` with ``low_open``).

    Raises
    ------
    SegNetError
        For anything else (None too, unless ``optional``).
    """
    if value is None and optional:
        return None
    ok = is_real(value) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        raise SegNetError(
            f"{name} must be {_range('a finite number', low, high, low_open, optional)}, "
            f"not {_show(value)}"
        )
    return float(value)


def integer(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    optional: bool = False,
) -> int | None:
    """``value`` as an int within ``[low, high]``; integral floats (``256.0``) are accepted.

    Raises
    ------
    SegNetError
        For anything else (None too, unless ``optional``).
    """
    if value is None and optional:
        return None
    ok = is_int(value) or (is_real(value) and math.isfinite(value) and float(value).is_integer())
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise SegNetError(
            f"{name} must be {_range('an integer', low, high, False, optional)}, not {_show(value)}"
        )
    return int(value)


def _range(what: str, low, high, low_open: bool, optional: bool) -> str:
    if low is not None and high is not None:
        what += f" from {low} to {high}" if not low_open else f" above {low} and at most {high}"
    elif low is not None:
        what += f" above {low}" if low_open else f" of at least {low}"
    elif high is not None:
        what += f" of at most {high}"
    return what + (" or None" if optional else "")


def flag(name: str, value: Any, *, optional: bool = False) -> bool | None:
    """``value`` as a bool (True/False, numpy bools too; None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise SegNetError(f"{name} must be True or False, not {_show(value)}")
    return bool(value)


def sizes(
    name: str, value: Any, n: int, *, low: int = 1, high: int | None = None, optional: bool = True
) -> tuple[int, ...] | None:
    """One integer for every axis, or ``n`` of them, as a tuple of ``n`` ints."""
    if value is None and optional:
        return None
    items = value if isinstance(value, (tuple, list)) else None
    try:
        if items is None:
            return (integer(name, value, low=low, high=high),) * n
        if len(items) == n:
            return tuple(integer(name, v, low=low, high=high) for v in items)
    except SegNetError:
        pass
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    raise SegNetError(
        f"{name} must be an integer {bounds} or {n} of them (one per spatial axis)"
        f"{' or None' if optional else ''}, not {_show(value)}"
    )


def spacing(value: Any, ndim: int, name: str = "spacing") -> tuple[float, ...] | None:
    """Pixel sizes: None, one positive number, or ``ndim`` of them."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value]
    if len(items) == 1:
        items = items * ndim
    if len(items) != ndim or not all(is_real(v) and math.isfinite(v) and v > 0 for v in items):
        raise SegNetError(
            f"{name} must be a positive number or {ndim} of them (one per axis), not {_show(value)}"
        )
    return tuple(float(v) for v in items)


def callback(name: str, value: Any) -> None:
    """``value`` must be callable or None."""
    if value is not None and not callable(value):
        raise SegNetError(f"{name} must be a function or None, not {_show(value)}")


def cancel_event(value: Any) -> None:
    """``value`` must be None or have ``is_set()`` (a ``threading.Event``)."""
    if value is not None and not callable(getattr(value, "is_set", None)):
        raise SegNetError(f"cancel must be a threading.Event or None, not {_show(value)}")


def model(value: Any) -> None:
    """``value`` must be a napari-segnet network."""
    from .models.base import SegNet

    if not isinstance(value, SegNet):
        raise NotAModelError(
            "model must be a napari-segnet model (build_model, load_model or train), "
            f"not {type(value).__name__}"
        )


def array(value: Any, name: str = "image"):
    """An array-like input: numpy, zarr and dask kept as they are (read lazily), nested
    sequences turned into numpy; a dtype outside bool/int/uint/float, None, a path or a
    scalar is refused.

    Returns
    -------
    array-like
        Something with ``shape``, ``dtype`` and ``__getitem__``.
    """
    if value is None:
        raise SegNetError(f"{name} is None; give an array")
    if isinstance(value, (str, bytes, os.PathLike)):
        raise SegNetError(
            f"{name} is a path ({_show(os.fsdecode(value))}), not an array; read it first "
            "(e.g. tifffile.imread) or use the napari-segnet command line"
        )
    if not (hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__getitem__")):
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise SegNetError(f"{name} cannot be read as an array: {e}") from None
    kind = np.dtype(value.dtype).kind
    if kind not in IMAGE_KINDS:
        raise SegNetError(
            f"{name} has dtype {value.dtype}; give a bool, integer or real float array "
            "(complex, object and text arrays are refused)"
        )
    if len(value.shape) == 0:
        raise SegNetError(f"{name} is a single value, not an array")
    if 0 in tuple(value.shape):
        raise SegNetError(f"{name} is empty (shape {tuple(value.shape)})")
    return value


def finite(block, name: str = "image", *, float32: bool = True) -> None:
    """Refuse NaN, infinite values and (with ``float32``) values beyond float32's range.

    ``block`` is a numpy array (an in-memory image, or one tile of a lazy one); other
    arrays are checked tile by tile as they are read.
    """
    if not isinstance(block, np.ndarray) or block.dtype.kind != "f" or block.size == 0:
        return
    lo, hi = np.min(block), np.max(block)  # both NaN when any value is NaN
    if np.isnan(lo) or np.isnan(hi):
        raise SegNetError(f"NaN values in the {name}: replace them first")
    if np.isinf(lo) or np.isinf(hi):
        hint = " (float16 holds at most ±65504)" if block.dtype == np.float16 else ""
        raise SegNetError(f"infinite values in the {name}{hint}: replace or clip them first")
    if float32 and max(-float(lo), float(hi)) > FLOAT32_MAX:
        raise SegNetError(
            f"the {name} has values beyond the float32 range (±3.4e38): {float(lo):.3g} to "
            f"{float(hi):.3g}; rescale it first"
        )


def out_array(out: Any, shape: tuple[int, ...], kinds: str, name: str = "out", source=None):
    """A writable output array of ``shape`` whose dtype kind is in ``kinds``.

    ``kinds`` ``"f"`` takes float32 or float64 (nothing that truncates probabilities);
    ``"i"`` takes signed integers of at least 32 bits. ``source`` is an input that
    ``out`` must not share memory with (inputs are never modified).
    """
    if not (hasattr(out, "shape") and hasattr(out, "dtype") and hasattr(out, "__setitem__")):
        raise SegNetError(f"{name} must be a numpy or zarr array, not {type(out).__name__}")
    dt = np.dtype(out.dtype)
    if kinds == "f" and not (dt.kind == "f" and dt.itemsize >= 4):
        raise SegNetError(f"{name} has dtype {dt}; it must be float32 or float64")
    if kinds == "i" and not (dt.kind == "i" and dt.itemsize >= 4):
        raise SegNetError(f"{name} has dtype {dt}; it must be int32 or int64")
    if tuple(out.shape) != tuple(shape):
        raise SegNetError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    read_only = getattr(out, "read_only", False)
    if isinstance(out, np.ndarray):
        read_only = not out.flags.writeable
    if read_only:
        raise SegNetError(f"{name} is read-only")
    shared = isinstance(source, np.ndarray) and isinstance(out, np.ndarray)
    if shared and np.may_share_memory(out, source):
        raise SegNetError(f"{name} shares memory with the input, which is never modified")
    return out


def one_of(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` must be one of the strings ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise SegNetError(f"{name} must be one of {tuple(allowed)}, not {_show(value)}")
    return value
