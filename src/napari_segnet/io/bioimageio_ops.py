"""bioimage.io pre- and postprocessing steps as the engine's normalisation and tensor ops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import ModelFileError
from ..options import Normalization

Op = Callable[[torch.Tensor], torch.Tensor]
# Steps whose statistics come from the whole image: the engine computes them once per
# image (and time point), so every tile is normalised alike.
_STATISTICS = ("scale_range", "zero_mean_unit_variance")


def _scalar(kwargs: Any, name: str, step: str, where: str) -> float:
    value = getattr(kwargs, name)
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ModelFileError(f"{where}: {step} with per-channel {name} values is not supported")
        value = value[0]
    return float(value)


def _fixed_op(step: Any, where: str) -> Op | None:
    """A step that needs no statistics, as a tensor operation (None: nothing to do)."""
    kind, kw = step.id, getattr(step, "kwargs", None)
    if kind == "ensure_dtype":
        return None  # the engine feeds float32 and reads float32
    if kind == "clip":
        lo, hi = kw.min, kw.max
        return lambda x: torch.clamp(x, lo, hi)
    if kind == "scale_linear":
        gain, offset = _scalar(kw, "gain", kind, where), _scalar(kw, "offset", kind, where)
        return lambda x: x * gain + offset
    if kind == "fixed_zero_mean_unit_variance":
        mean, std = _scalar(kw, "mean", kind, where), _scalar(kw, "std", kind, where)
        eps = kw.eps
        return lambda x: (x - mean) / (std + eps)
    if kind == "sigmoid":
        return torch.sigmoid
    if kind == "binarize":
        threshold = _scalar(kw, "threshold", kind, where)
        return lambda x: (x > threshold).to(x.dtype)
    return None if kind is None else _unsupported(kind, where)


def _unsupported(kind: str, where: str):
    raise ModelFileError(
        f"{where}: the processing step {kind!r} is not supported; napari-segnet runs "
        "scale_range, zero_mean_unit_variance, fixed_zero_mean_unit_variance, "
        "scale_linear, clip, ensure_dtype, sigmoid, softmax and binarize"
    )


def normalization_and_ops(tensor: Any, where: str) -> tuple[Normalization, list[Op]]:
    """The input's preprocessing: the engine's normalisation and the steps after it.

    A statistics step (``scale_range``, ``zero_mean_unit_variance``) must come first
    (after ``ensure_dtype``): it becomes the engine's per-image normalisation; the
    others run on each tile inside the model.
    """
    norm, ops = Normalization(kind="none"), []
    for i, step in enumerate(tensor.preprocessing):
        kw = getattr(step, "kwargs", None)
        if step.id in _STATISTICS:
            earlier = [s.id for s in tensor.preprocessing[:i] if s.id != "ensure_dtype"]
            if earlier or getattr(kw, "reference_tensor", None) is not None:
                raise ModelFileError(
                    f"{where}: {step.id} after {earlier} or on another tensor is not supported"
                )
            if step.id == "scale_range":
                norm = Normalization(low=kw.min_percentile, high=kw.max_percentile)
            else:
                norm = Normalization(kind="meanstd")
            continue
        op = _fixed_op(step, where)
        if op is not None:
            ops.append(op)
    return norm, ops


def postprocessing_ops(tensor: Any, out_axes: Sequence[str], where: str) -> list[Op]:
    """The output's postprocessing, on ``(B, C, *spatial)`` tensors."""
    ops = []
    for step in tensor.postprocessing:
        if step.id == "softmax":
            if str(step.kwargs.axis) != "channel" or "channel" not in out_axes:
                raise ModelFileError(f"{where}: a softmax over {step.kwargs.axis} is not supported")
            ops.append(lambda y: torch.softmax(y, dim=1))
        elif step.id in _STATISTICS or step.id == "scale_mean_variance":
            _unsupported(step.id, where)
        else:
            op = _fixed_op(step, where)
            if op is not None:
                ops.append(op)
    return ops
