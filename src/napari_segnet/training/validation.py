"""Validation during training: scores per epoch and the instance thresholds after it."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from ..engine import predict
from ..metrics import average_precision, mean_iou
from ..models import SegNet
from ..options import Normalization
from ..postprocess.instances import label_instances
from .data import Pair
from .targets import IGNORE
from .thresholds import MAX_PIXELS, tune_instance_options


def validation_probabilities(
    model: SegNet, pairs: list[Pair], device: torch.device
) -> list[np.ndarray]:
    """Class probabilities of each validation image, predicted by a copy of ``model``."""
    net = copy.deepcopy(model).eval()
    # Validation images are normalised already.
    net.meta["normalization"] = Normalization(kind="none").to_dict()
    axes = "C" + ("ZYX" if model.dims == 3 else "YX")
    return [predict(p.image, net, axes=axes, device=device) for p in pairs]


def validation_score(model: SegNet, pairs: list[Pair], target: str, device: torch.device) -> float:
    """Mean AP@0.5 (instances) or mean IoU (classes) of ``model`` on ``pairs``."""
    scores = []
    for p, prob in zip(pairs, validation_probabilities(model, pairs, device)):
        if target == "instances":
            pred = label_instances(prob, mode="boundary", ndim=model.dims)
            scores.append(average_precision(p.labels, pred, 0.5))
        else:
            scores.append(mean_iou(p.target, prob.argmax(0), model.n_classes, ignore=IGNORE))
    return float(np.nanmean(scores))


def limit_pixels(pairs: list[Pair], limit: int) -> list[Pair]:
    """The first pairs, the last one cropped along its first axis, with at most
    ``limit`` pixels."""
    out, left = [], limit
    for p in pairs:
        if left <= 0:
            break
        if p.labels.size > left:
            rows = max(1, left // int(np.prod(p.labels.shape[1:])))
            p = replace(
                p,
                image=p.image[:, :rows],
                target=p.target[:rows],
                weight=p.weight[:rows],
                labels=p.labels[:rows],
            )
        out.append(p)
        left -= p.labels.size
    return out


def tune_thresholds(model: SegNet, pairs: list[Pair], device: torch.device) -> dict | None:
    """The instance thresholds that label (at most :data:`MAX_PIXELS` of) ``pairs`` best.

    Returns
    -------
    dict or None
        See :func:`~napari_segnet.training.thresholds.tune_instance_options`.
    """
    fit = limit_pixels(pairs, MAX_PIXELS)
    probs = validation_probabilities(model, fit, device)
    return tune_instance_options(probs, [p.labels for p in fit], model.dims)
