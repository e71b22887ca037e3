"""Preparing the data of a training run: checked annotations, pairs, patches, steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SegNetError
from ..io.collection import Collection
from ..models import SegNet
from ..options import Normalization
from .augment import Augmentation
from .data import Pair, PatchSampler, TargetMaker, as_list, load_pairs, split_validation
from .scale import rescale_to_diameter
from .settings import TrainOptions
from .targets import make_target
from .workers import WorkerSampler


@dataclass
class TrainingData:
    """Normalised training pairs and what they were made with.

    Attributes
    ----------
    labels : list of numpy.ndarray
        The user's label images (for class counts and object diameters).
    pairs : list of Pair
        Normalised images with their class maps and loss weights.
    channels : int
        Image channels.
    dims : int
        Spatial dimensions of the network.
    normalization : dict
        The normalisation applied, as stored in ``model.meta``.
    make_target : callable or None
        Makes the class map and weights of a label image (the run's settings bound).
    collection : Collection or None
        The collection the images came from (validation is then split by image).
    source_diameters : list of float or None
        With a target diameter: each image's median object diameter before rescaling.
    """

    labels: list[np.ndarray]
    pairs: list[Pair]
    channels: int
    dims: int
    normalization: dict[str, Any]
    make_target: TargetMaker | None = None
    collection: Collection | None = None
    source_diameters: list[float] | None = None


@dataclass
class Plan:
    """How the pairs are used: the split, the patch sampler and the step counts."""

    train_pairs: list[Pair]
    val_pairs: list[Pair]
    patch_size: tuple[int, ...]
    batch_size: int
    steps_per_epoch: int
    augmentation: Augmentation
    sampler: PatchSampler | WorkerSampler


def read_annotations(images: Any, labels: Any, target: str) -> tuple[list, list[np.ndarray]]:
    """The images and label images as lists, checked to hold something to learn.

    Raises
    ------
    SegNetError
        When the counts differ or the labels cannot train ``target``.
    """
    image_list = as_list(images)
    label_list = [np.asarray(lab) for lab in as_list(labels)]
    if not image_list or len(image_list) != len(label_list):
        raise SegNetError(
            f"{len(image_list)} images but {len(label_list)} label images: "
            "give one label image per image"
        )
    check_classes(target, label_list)
    return image_list, label_list


def check_classes(target: str, labels: list[np.ndarray]) -> None:
    """Raise a :class:`SegNetError` when ``labels`` hold too few classes for ``target``."""
    present: set[int] = set()
    for lab in labels:
        present |= set(np.unique(np.asarray(lab)).tolist())
    if target == "instances":
        if present <= {0}:
            raise SegNetError("the labels contain no objects: annotate some objects first")
        return
    if target == "scribbles":
        present.discard(0)
        if not present:
            raise SegNetError("no labelled pixels: paint scribbles (1, 2, ...) on the image first")
        if len(present) < 2:
            raise SegNetError(
                f"scribbles of a single class ({present.pop()}) cannot train a classifier: "
                "paint at least two classes (e.g. 1 = background, 2 = object)"
            )
        return
    if len(present) < 2:
        raise SegNetError(
            f"the labels hold a single class ({present.pop()}): a semantic target needs "
            "background (0) and at least one class"
        )


def n_classes(target: str, labels: list[np.ndarray]) -> int:
    """Output classes a network needs for ``labels`` of kind ``target``."""
    if target == "instances":
        return 3
    top = max(int(np.asarray(lab).max()) for lab in labels)
    return top + 1 if target == "semantic" else top


def normalization_spec(model: SegNet | None) -> dict[str, Any]:
    """The normalisation to train with, as ``meta`` stores it.

    A model being fine-tuned keeps its own spec, the dict as it is (so model files
    keep their content), once :class:`Normalization` has checked it; a new network
    gets the default.
    """
    own = model.meta.get("normalization") if model is not None else None
    if not own:
        return Normalization().to_dict()
    Normalization.from_dict(own)  # a malformed spec fails here, with a clear message
    return own


def prepare_data(
    images: list,
    labels: list[np.ndarray],
    options: TrainOptions,
    *,
    model: SegNet | None,
    dims: int,
    axes: str | list[str] | None,
    spacing: Any,
    collection: Collection | None = None,
) -> TrainingData:
    """Normalise the images and make the class maps and loss weights of the labels.

    Parameters
    ----------
    images, labels : list
        From :func:`read_annotations`.
    options : TrainOptions
        The target and the weight-map parameters.
    model : SegNet or None
        The model to fine-tune (its dimensions, channels and normalisation apply), or
        None for a new network of ``dims`` dimensions.
    dims : int
        Spatial dimensions of a new network.
    axes : str, list of str or None
        Axes of the images (one string for all, or one per image); guessed when None.
    spacing : sequence of float or None
        Pixel size per axis, for the weight map.
    collection : Collection, optional
        Where the images came from, when a collection.

    With ``options.diameter``, each image is rescaled so that its median object
    diameter becomes that diameter (:func:`rescale_to_diameter`).
    """
    if model is not None:
        dims = model.dims
    norm_spec = normalization_spec(model)

    def target_of(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return make_target(lab, options.target, w0=options.w0, sigma=options.sigma, spacing=spacing)

    pairs, channels = load_pairs(
        images,
        labels,
        dims=dims,
        in_channels=None if model is None else model.in_channels,
        axes=axes,
        norm_spec=norm_spec,
        make_target=target_of,
    )
    diameters = None
    if options.diameter is not None:
        pairs, diameters = rescale_to_diameter(pairs, options.diameter, target_of)
    if not pairs or sum(p.n_labelled for p in pairs) == 0:
        raise SegNetError("no labelled pixels in the annotations")
    return TrainingData(labels, pairs, channels, dims, norm_spec, target_of, collection, diameters)


def patch_shape(options: TrainOptions, dims: int, divisor: int) -> tuple[int, ...]:
    """Training patch shape: as asked (or the default), rounded up to the network's divisor."""
    size = options.patch_size
    if size is None:
        shape: tuple[int, ...] = (128,) * dims if dims == 2 else (32, 64, 64)
    else:
        shape = (size,) * dims if np.isscalar(size) else tuple(size)
    if len(shape) != dims:
        raise SegNetError(
            f"patch_size {size!r} has {len(shape)} values but the network is {dims}D: "
            f"give one size or {dims}"
        )
    return tuple(max(divisor, int(math.ceil(p / divisor) * divisor)) for p in shape)


def plan_batches(
    data: TrainingData, options: TrainOptions, divisor: int, rng: np.random.Generator
) -> Plan:
    """Hold out validation data and set up patches, batches and steps for the rest.

    Raises
    ------
    SegNetError
        When an image is smaller than the network's ``divisor`` or validation
        leaves nothing to train on.
    """
    smallest = min(min(p.target.shape) for p in data.pairs)
    if smallest < divisor:
        raise SegNetError(
            f"an image is {smallest} px on a side, smaller than this network's minimum "
            f"size ({divisor} px); use a shallower network or larger images"
        )
    patch = patch_shape(options, data.dims, divisor)
    batch = int(options.batch_size or (8 if data.dims == 2 else 2))
    coll = data.collection
    train_pairs, val_pairs = split_validation(
        data.pairs,
        options.validation,
        patch,
        rng,
        by_image=coll is not None,
        groups=None if coll is None else coll.modalities,
    )
    if not train_pairs:
        raise SegNetError("nothing left to train on after holding out validation data")
    aug = options.augmentation_or_default
    retarget = data.make_target if options.target == "instances" else None
    sampler = PatchSampler(train_pairs, patch, aug, rng, options.target == "scribbles", retarget)
    # About four passes over the annotated area per epoch, within 10..100 steps.
    labelled = sum(p.n_labelled for p in train_pairs)
    steps = options.steps_per_epoch or int(
        np.clip(labelled / (np.prod(patch) * batch) * 4, 10, 100)
    )
    return Plan(train_pairs, val_pairs, patch, batch, steps, aug, sampler)
