"""Image/labels layer pairs for training, and labels layers made from results.

A Segment run's instance (or semantic) output becomes an editable labels layer
named for its image (:func:`result_as_labels`); the Train panel finds it again with
:func:`labels_for`. Training pairs are checked and read here (:func:`pair_arrays`),
so the panel stays a form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SegNetError
from ..training.prepare import check_classes
from .layers import META_KEY, as_array, layer_axes, layer_kwargs, results_of

# Metadata key of a labels layer made to be corrected and trained on: its image's name.
LABELS_FOR = "napari_segnet_labels_for"


@dataclass
class TrainingPairs:
    """The arrays of the chosen pairs, with what the panel shows about them."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]  # the image layers' names
    axes: list[str]  # of each image
    layers: list  # the image layers


def pair_arrays(pairs: list[tuple], target: str) -> TrainingPairs:
    """Check the (image layer, labels layer) pairs and read their arrays.

    Raises
    ------
    SegNetError
        When a layer is missing or of the wrong kind, a pair is chosen twice, an
        image and its labels differ in shape, or the labels hold nothing to learn.
    """
    from napari.layers import Image, Labels

    if not pairs:
        raise SegNetError("choose an image layer and a labels layer")
    images, labels, names, axes, layers, seen = [], [], [], [], [], set()
    for k, (img, lab) in enumerate(pairs, 1):
        if img is None or lab is None:
            raise SegNetError(f"pair {k}: choose an image layer and a labels layer")
        if not isinstance(img, Image):
            raise SegNetError(
                f"pair {k}: '{img.name}' is a {type(img).__name__} layer, not an image; "
                "choose the image the labels annotate"
            )
        if not isinstance(lab, Labels):
            raise SegNetError(f"pair {k}: '{lab.name}' is not a labels layer")
        if (img.name, lab.name) in seen:
            raise SegNetError(f"pair {k} ('{img.name}', '{lab.name}') is chosen twice")
        seen.add((img.name, lab.name))
        image = np.asarray(as_array(img.data))
        label = np.asarray(as_array(lab.data))
        spatial = image.shape[:-1] if img.rgb else image.shape
        if label.shape != spatial:
            raise SegNetError(
                f"pair {k}: labels '{lab.name}' {label.shape} and image '{img.name}' "
                f"{spatial} differ in shape: choose a labels layer of the image's size"
            )
        images.append(image)
        labels.append(label.copy())  # training runs in a thread; the user may paint on
        names.append(img.name)
        axes.append(layer_axes(img))
        layers.append(img)
    check_classes(target, labels)
    return TrainingPairs(images, labels, names, axes, layers)


def split_text(split: list[dict], pairs: TrainingPairs) -> str:
    """Which data is held out for validation, for people: one line per image."""
    if not split:
        return "none (images too small to hold out a strip; every pixel trains)"
    lines = []
    for k, name in enumerate(pairs.names):
        parts = [e for e in split if e["image"] == k]
        if not parts:
            continue
        width = np.shape(pairs.labels[k])[-1]
        where = []
        for e in parts:
            sl = f"slice {','.join(map(str, e['slice']))}: " if e["slice"] else ""
            col = round(e["start"] * width)
            where.append(sl + (f"X ≥ {col} px" if col else "whole"))
        lines.append(f"'{name}': " + "; ".join(where))
    return "\n".join(lines)


def split_shapes(split: list[dict], pairs: TrainingPairs, k: int) -> list[np.ndarray]:
    """Rectangles (in the labels' pixel coordinates) of image ``k``'s validation data."""
    shape = np.shape(pairs.labels[k])
    rects = []
    for e in split:
        if e["image"] != k:
            continue
        lead = list(e["slice"]) + [0] * (len(shape) - 2 - len(e["slice"]))
        h, w = shape[-2], shape[-1]
        x0 = round(e["start"] * w)
        corners = [(0, x0), (0, w), (h, w), (h, x0)]
        rects.append(np.array([[*lead, y - 0.5, x - 0.5] for y, x in corners], float))
    return rects


def result_layer(viewer, image) -> object:
    """The image's newest instance result layer, else its newest semantic one."""
    layers = results_of(viewer, image.name)
    for output in ("instances", "semantic"):
        found = [lay for lay in layers if lay.metadata[META_KEY].get("output") == output]
        if found:
            return found[-1]
    raise SegNetError(
        f"no segmentation of '{image.name}' to copy: segment it first (instance or "
        "semantic labels output)"
    )


def result_as_labels(viewer, image):
    """Copy the image's segmentation to a new editable labels layer; returns the layer.

    The layer is named ``"<image> labels"`` (numbered when that name is taken, so
    corrections already made are never overwritten), has the result's scale and
    translate, and becomes the selected layer, in paint mode.
    """
    if image is None:
        raise SegNetError("choose an image layer first")
    source = result_layer(viewer, image)
    name, k = f"{image.name} labels", 2
    while name in viewer.layers:
        name = f"{image.name} labels {k}"
        k += 1
    data = np.array(as_array(source.data), copy=True)
    layer = viewer.add_labels(
        data, name=name, metadata={LABELS_FOR: image.name}, **layer_kwargs(source)
    )
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    return layer


def labels_for(viewer, image) -> object | None:
    """The newest labels layer made from a result of ``image`` (None if there is none)."""
    if image is None:
        return None
    found = [lay for lay in viewer.layers if lay.metadata.get(LABELS_FOR) == image.name]
    return found[-1] if found else None
