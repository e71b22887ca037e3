"""``train``: fit a network to annotations with the boundary-weighted loss.

A run is a few named steps: check the options, prepare the data, pick the network
to start from, run the epochs, tune the instance thresholds and record the results.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..engine.devices import resolve_device
from ..errors import SegNetError
from ..models import SegNet
from .augment import Augmentation
from .checkpoint import load_checkpoint
from .epochs import EpochLoop, weighted_loss
from .inputs import resolve_inputs
from .prepare import plan_batches, prepare_data, read_annotations
from .progress import Budget, TrainingUpdate
from .record import finish, output_class_names
from .settings import TrainOptions
from .start import TRAIN_DEFAULTS, fine_tune_copy, starting_point
from .validation import tune_thresholds
from .workers import WorkerSampler

__all__ = ["TRAIN_DEFAULTS", "TrainingUpdate", "train", "weighted_loss"]


def train(
    images,
    labels,
    *,
    model: str | SegNet = "unet",
    target: str = "instances",
    epochs: int | None = None,
    max_time: float | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    device="auto",
    seed: int = 0,
    progress: Callable[[TrainingUpdate], None] | None = None,
    cancel: threading.Event | None = None,
    axes: str | list[str] | None = None,
    dims: int = 2,
    model_options: dict[str, Any] | None = None,
    patch_size: int | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    validation: float = 0.15,
    patience: int | None = None,
    augmentation: Augmentation | None = None,
    spacing=None,
    class_names: list[str] | None = None,
    pretrained: str | None = "auto",
    diameter: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike | None = None,
    workers: int = 0,
    arch: str | None = None,
) -> SegNet:
    """Train (or fine-tune) a segmentation network on annotated images.

    Parameters
    ----------
    images : array, list of arrays, folder or Collection
        Images (2D, 2D with channels, 2D stacks, or 3D volumes for ``dims=3``); of
        different sizes if you like. Never modified. Or a collection: a folder of
        ``images/`` and ``labels/`` (and optionally ``index.csv``), or a
        :class:`~napari_segnet.io.collection.Collection` read from one; validation
        then holds out whole images, stratified by the index's modality.
    labels : array, list of arrays or None
        One label image per image, the image's shape without its channel axis; None
        for a collection.
    model : str or SegNet
        An architecture name (``"unet"``, ``"deconvnet"``, ``"dilated"``) to build, or
        a model to fine-tune (a copy is trained; its classes and normalisation are kept).
        ``"maskrcnn"`` (or a Mask R-CNN model) trains a box-then-mask detector from
        instance labels with
        :func:`~napari_segnet.training.detection.train_maskrcnn`; options that belong
        to the pixel-wise loss (``w0``, ``sigma``, ``augmentation``, ...) must keep their
        defaults then.
    target : str
        ``"instances"``: instance ids become background / interior / boundary and the
        loss is weighted by :func:`boundary_weight_map` (``w0``, ``sigma``).
        ``"semantic"``: class ids, 0 = background. ``"scribbles"``: sparse labels,
        0 = unlabelled (ignored by the loss), 1..K = classes.
    epochs : int, optional
        Number of epochs. With neither ``epochs`` nor ``max_time``: 50 epochs.
    max_time : float, optional
        Stop after this many seconds (the learning-rate schedule follows the time),
        fitting of the instance thresholds included.
    w0, sigma : float
        Boundary weight map parameters.
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``. On CUDA: bfloat16 autocast and
        channels-last memory.
    seed : int
        Seeds weights, patch sampling and augmentation: on the CPU the same call gives
        the same model.
    progress : callable, optional
        Called with a :class:`TrainingUpdate` after every step and every epoch.
    cancel : threading.Event, optional
        Set it to stop within a step; the best model so far is returned.
    axes : str or list of str, optional
        Axes of the images (e.g. ``"YX"``, ``"YXC"``, ``"ZYX"``), or one such string per
        image when they differ (a stack with 2D images); guessed if None.
    dims : int
        2 or 3: the network's spatial dimensions when ``model`` is a name.
    model_options : dict, optional
        Options for :func:`build_model` (default for ``"unet"``: depth 3, width 16).
    patch_size, batch_size, steps_per_epoch : optional
        Training patches (default 128 in 2D, 64 in 3D), patches per step (8 in 2D,
        2 in 3D) and steps per epoch (from the annotated area, 10 to 100).
    lr, weight_decay, optimizer : optional
        Peak learning rate of the warm-up + cosine schedule (default 3e-3 from scratch,
        1e-3 when fine-tuning); ``"adamw"`` or ``"adam"``.
    validation : float
        Fraction held out for validation (whole images when there are four or more,
        else a strip at the right of each image); 0 for none. The model with the best
        validation score is returned.
    patience : int, optional
        Stop after this many epochs without a better validation score (default 20
        when bounded by epochs, none when bounded by time).
    augmentation : Augmentation, optional
        Patch augmentation (default: flips, 90° rotations, elastic deformation,
        intensity scale/shift/gamma and noise).
    spacing : sequence of float, optional
        Pixel size per axis, for the weight map of anisotropic data.
    class_names : list of str, optional
        Names of the output classes, stored with the model.
    pretrained : str or None
        Start from the weights of a bundled model (transfer learning) instead of random
        ones. ``"auto"``: instance training of single-channel 2D images with the default
        architecture (``model="unet"``, no ``model_options``) starts from the bundled
        ``"nuclei"`` model, which needs far less time and annotation to reach a good
        score; everything else starts from scratch. A bundled model's name (see
        :func:`available_models`) always starts from it; None never does.
    diameter : float, optional
        Instances only: rescale each image (and its labels) so that its median object
        diameter becomes this many pixels before patches are taken, which brings
        objects of different images to one size; ``meta["diameter"]`` records it, so
        ``segment(..., diameter=...)`` rescales new images to it. None: as given.
    checkpoint : path-like, optional
        Folder to write a resumable checkpoint to (weights, optimizer and random
        state; no pickle) every ``checkpoint_every`` epochs and at the end.
    checkpoint_every : int
        Epochs between checkpoints.
    resume : path-like, optional
        A checkpoint folder to continue from: the same call with ``resume`` goes on
        from the checkpoint's epoch, step, learning-rate schedule position and random
        state, and gives the model the uninterrupted run would have given (on the
        CPU). ``epochs`` counts all epochs, those before the checkpoint included.
    workers : int
        Processes that sample and augment patches while the network trains (worth it
        on a GPU, which otherwise waits for them); 0: one background thread. Runs
        with workers are not reproducible bit for bit.
    arch : str, optional
        Another way to name the architecture of a new network:
        ``train(..., arch="maskrcnn")`` is ``train(..., model="maskrcnn")``.

    Returns
    -------
    SegNet
        The trained model in eval mode, with ``history`` and ``meta`` (target,
        classes, normalisation, typical object diameter, training settings). For
        instances, ``meta["instance_options"]`` holds the seed and foreground
        thresholds that labelled the validation data best
        (:func:`~napari_segnet.training.thresholds.tune_instance_options`), which
        ``segment`` then uses.
    """
    if arch is not None:
        if not (isinstance(model, str) and model == "unet"):
            raise SegNetError("give the architecture once: arch= or model=, not both")
        model = arch
    if model == "maskrcnn" or (isinstance(model, SegNet) and model.arch == "maskrcnn"):
        return _train_detector(locals())
    start_time = time.perf_counter()  # max_time counts from the call, preparation included
    options = TrainOptions(
        target=target,
        epochs=epochs,
        max_time=max_time,
        w0=w0,
        sigma=sigma,
        patch_size=patch_size,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
        validation=validation,
        patience=patience,
        augmentation=augmentation,
        seed=seed,
        diameter=diameter,
        checkpoint_every=checkpoint_every,
        workers=workers,
    )
    inputs = resolve_inputs(images, labels, axes)
    saved = load_checkpoint(resume) if resume is not None else None
    image_list, label_list = read_annotations(inputs.images, inputs.labels, target)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)

    # Data, and the network to start from (its shape depends on the data's channels).
    to_tune = fine_tune_copy(model, target, label_list)
    data = prepare_data(
        image_list,
        label_list,
        options,
        model=to_tune,
        dims=dims,
        axes=inputs.axes,
        spacing=spacing,
        collection=inputs.collection,
    )
    start = starting_point(
        model, to_tune, data, target, pretrained=pretrained, model_options=model_options
    )
    # Checked before the epochs: class names must fit the network's outputs.
    names = output_class_names(target, start.net.n_classes, class_names, model)
    plan = plan_batches(data, options, start.net.divisor, rng)
    if options.workers:
        # Started now, before the network reaches the GPU, so the forks copy no CUDA state.
        plan.sampler = WorkerSampler(plan.sampler, options.workers)
        plan.sampler.start(plan.batch_size)

    # Epochs, with validation after each; then the labelling thresholds.
    budget = Budget(start_time, options.planned_epochs, plan.steps_per_epoch, options.max_time)
    loop = EpochLoop(
        start.net,
        plan,
        options,
        start.peak_lr(lr),
        dev,
        budget,
        progress=progress,
        cancel=cancel,
        checkpoint=checkpoint,
    )
    if saved is not None:
        saved.restore(loop)
    try:
        net = loop.run()
    finally:
        if isinstance(plan.sampler, WorkerSampler):
            plan.sampler.close()
    cancelled = cancel is not None and cancel.is_set()
    tuned = tune_thresholds(net, plan.val_pairs, dev) if loop.tune and not cancelled else None

    finish(
        net,
        loop,
        data,
        options,
        names=names,
        fine_tuned_from=start.fine_tuned_from,
        spacing=spacing,
        tuned=tuned,
    )
    return net


# ``train`` options that a Mask R-CNN run takes, and the defaults of those it does not.
_DETECTOR_OPTIONS = (
    "model",
    "epochs",
    "max_time",
    "steps_per_epoch",
    "batch_size",
    "patch_size",
    "lr",
    "weight_decay",
    "validation",
    "patience",
    "axes",
    "model_options",
    "device",
    "seed",
    "progress",
    "cancel",
    "checkpoint",
    "checkpoint_every",
)
_DETECTOR_FIXED = {
    "target": "instances",
    "w0": 10.0,
    "sigma": 5.0,
    "dims": 2,
    "optimizer": "adamw",
    "augmentation": None,
    "spacing": None,
    "class_names": None,
    "diameter": None,
    "resume": None,
    "workers": 0,
}


def _train_detector(args: dict[str, Any]) -> SegNet:
    """``train`` for Mask R-CNN: the options it shares, the others at their defaults."""
    from .detection import train_maskrcnn

    changed = [k for k, v in _DETECTOR_FIXED.items() if args[k] != v]
    if changed:
        raise SegNetError(
            f"Mask R-CNN training does not take {changed}: leave them at their defaults "
            f"(target must be 'instances')"
        )
    inputs = resolve_inputs(args["images"], args["labels"], args["axes"])
    images, labels = read_annotations(inputs.images, inputs.labels, "instances")
    kwargs = {k: args[k] for k in _DETECTOR_OPTIONS}
    kwargs["axes"] = inputs.axes
    return train_maskrcnn(images, labels, **kwargs)
