"""The network a training run starts from: a copy to fine-tune, a bundled model, or a new one."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SegNetError
from ..models import SegNet, build_model
from .prepare import TrainingData, n_classes

# Defaults for a network built by ``train``: small enough to learn in minutes on a CPU.
TRAIN_DEFAULTS = {
    "unet": {"depth": 3, "width": 16},
    "deconvnet": {"depth": 3, "width": 16},
    "dilated": {"depth": 3, "width": 16, "output_stride": 4, "pool_size": 64, "rates": [2, 4, 6]},
}
# Peak learning rates: fine-tuning starts gentler, to keep what the weights already know.
LR_SCRATCH = 3e-3
LR_FINE_TUNE = 1e-3


@dataclass
class StartingPoint:
    """The network to train and where its weights come from.

    Attributes
    ----------
    net : SegNet
        A private copy (or a new network), on the CPU.
    fine_tuned_from : str or None
        ``source`` of the model whose weights it starts from (None: random weights,
        or a model that was not loaded from anywhere).
    pretrained : bool
        Whether the weights are trained ones (a model to fine-tune or a bundled one).
    """

    net: SegNet
    fine_tuned_from: str | None
    pretrained: bool

    def peak_lr(self, lr: float | None) -> float:
        """``lr`` as given, else the default for random or trained weights."""
        if lr is not None:
            return float(lr)
        return LR_FINE_TUNE if self.pretrained else LR_SCRATCH


def fine_tune_copy(model: str | SegNet, target: str, labels: list[np.ndarray]) -> SegNet | None:
    """A CPU copy of ``model`` when it is a network to fine-tune; None for a name.

    Raises
    ------
    SegNetError
        When ``model`` is neither, or its classes cannot fit ``labels``.
    """
    if isinstance(model, str):
        return None
    if not isinstance(model, SegNet):
        raise SegNetError("model must be an architecture name or a napari-segnet model")
    net = copy.deepcopy(model).cpu()
    needed = n_classes(target, labels)
    if target == "instances" and net.n_classes != 3:
        raise SegNetError(
            "an instance target needs a model with 3 classes (background, interior, boundary)"
        )
    if needed > net.n_classes:
        raise SegNetError(f"the labels use {needed} classes but the model has {net.n_classes}")
    return net


def load_pretrained(
    pretrained: str | None,
    arch: str,
    target: str,
    data: TrainingData,
    model_options: dict[str, Any] | None,
) -> SegNet | None:
    """The bundled model to start training from, as a private CPU copy, or None.

    ``"auto"`` picks ``"nuclei"`` for instance training of single-channel 2D images
    with the default U-Net, and nothing otherwise.

    Raises
    ------
    SegNetError
        When a named model does not fit the data, target or ``model_options``.
    """
    if pretrained is None:
        return None
    if pretrained == "auto":
        fits = arch == "unet" and target == "instances" and data.dims == 2 and data.channels == 1
        if not fits or model_options is not None:
            return None
        pretrained = "nuclei"
    from ..io.bundled import load_model  # reads files: only when a model is wanted

    if model_options is not None:
        raise SegNetError("model_options cannot change the architecture of a pretrained model")
    base = copy.deepcopy(load_model(pretrained)).cpu()
    if base.dims != data.dims or base.in_channels != data.channels:
        raise SegNetError(
            f"the {pretrained!r} model takes {base.in_channels}-channel {base.dims}D images, "
            f"not {data.channels}-channel {data.dims}D ones; use pretrained=None"
        )
    if target == "instances" and base.n_classes != 3:
        raise SegNetError(f"the {pretrained!r} model does not predict instances")
    return base


def starting_point(
    model: str | SegNet,
    copy_to_tune: SegNet | None,
    data: TrainingData,
    target: str,
    *,
    pretrained: str | None,
    model_options: dict[str, Any] | None,
) -> StartingPoint:
    """The network to train: the copy to fine-tune, a bundled model or a new network.

    Parameters
    ----------
    model : str or SegNet
        What the caller passed as ``model``.
    copy_to_tune : SegNet or None
        From :func:`fine_tune_copy`.
    data : TrainingData
        The prepared data (its dimensions, channels and labels shape a new network).
    target : str
        The training target.
    pretrained : str or None
        A bundled model to start from, ``"auto"`` or None (see :func:`train`).
    model_options : dict or None
        Options for :func:`build_model`, over :data:`TRAIN_DEFAULTS`.
    """
    if copy_to_tune is not None:
        # The copy carries the original's ``source``.
        return StartingPoint(copy_to_tune, copy_to_tune.source, pretrained=True)
    base = load_pretrained(pretrained, model, target, data, model_options)
    if base is not None:
        return StartingPoint(base, base.source, pretrained=True)
    options = {**TRAIN_DEFAULTS.get(model, {}), **(model_options or {})}
    net = build_model(
        model,
        dims=data.dims,
        in_channels=data.channels,
        n_classes=n_classes(target, data.labels),
        **options,
    )
    return StartingPoint(net, None, pretrained=False)
