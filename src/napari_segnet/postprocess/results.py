"""From probabilities to the results ``segment`` returns: CRF, classes, instances."""

from __future__ import annotations

import threading

import numpy as np

from .. import checks
from ..engine.sinks import class_ids
from ..errors import SegNetError
from ..models.base import SegNet
from .crf import refine_crf
from .instances import label_instances
from .stitch import stitch_slices

# What an instance model's three classes are; the CRF keeps the boundary class for them.
_INSTANCE_FOREGROUND = (1, 2)


def instance_options(model: SegNet, overrides: dict | None) -> dict:
    """Keyword arguments for :func:`label_instances`: the model's stored options, then
    the caller's (checked here, before any work)."""
    overrides = dict(overrides or {})
    ndim = checks.integer("ndim", overrides.pop("ndim", model.dims), low=2, high=3)
    opts = model.metadata.instance_options.replace(**overrides)
    return {**opts.changed(), "ndim": ndim}


def crf_params(model: SegNet, crf: bool | dict) -> dict:
    """Keyword arguments for :func:`refine_crf` from ``segment``'s ``crf`` argument.

    For instance models (background, interior, boundary) objects are refined against
    the background as one class, so the thin boundary class survives.
    """
    params = dict(crf) if isinstance(crf, dict) else {}
    meta = model.metadata
    if meta.target == "instances" and model.n_classes == 3:
        params = {"foreground": _INSTANCE_FOREGROUND, **params}
    return params


def crf_image(src, layout) -> np.ndarray:
    """The image with axes like the outputs and any channel axis last, for the CRF."""
    img = np.asarray(src)
    if layout.channel is not None:
        img = np.moveaxis(img, layout.channel, -1)
    if img.ndim - (layout.channel is not None) > 3:
        raise SegNetError("crf=True takes 2D images, stacks or volumes (at most 3 axes)")
    return img


def finish(
    prob: np.ndarray,
    model: SegNet,
    *,
    image=None,
    layout=None,
    crf: bool | dict = False,
    instances: bool,
    options: dict,
    stitch: dict | None = None,
    semantic_dtype: np.dtype,
    device="auto",
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Refine (optionally) and label in-memory probabilities.

    ``stitch`` (``axes`` and ``anisotropy``) labels 3D objects over the Z axis of a 2D
    model's per-slice probabilities (:func:`stitch_slices`).

    Returns
    -------
    tuple
        ``(probabilities, semantic, instances or None)``.
    """
    if crf:
        params = crf_params(model, crf)
        prob = refine_crf(crf_image(image, layout), prob, device=device, cancel=cancel, **params)
    semantic = class_ids(prob).astype(semantic_dtype)
    labels = None
    if instances and stitch is not None:
        per_slice = {k: v for k, v in options.items() if k != "ndim"}
        labels = stitch_slices(prob, stitch["axes"], anisotropy=stitch["anisotropy"], **per_slice)
    elif instances:
        labels = label_instances(prob, **options)
    return prob, semantic, labels
