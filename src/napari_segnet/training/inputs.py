"""What ``train`` was given: arrays with labels, or a collection (folder) of pairs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import SegNetError
from ..io.collection import Collection, read_collection


@dataclass(frozen=True)
class TrainingInputs:
    """Images, labels and their axes, with the collection they came from (if any).

    Attributes
    ----------
    images, labels : array or list
        As ``train`` takes them (a collection's as lists).
    axes : str or None
        Axes of the images (a collection's are known).
    collection : Collection or None
        The collection read, for the image-wise split and the record.
    """

    images: Any
    labels: Any
    axes: str | None
    collection: Collection | None = None

    @property
    def groups(self) -> list[str | None] | None:
        """Each image's modality (None without a collection)."""
        return None if self.collection is None else list(self.collection.modalities)


def resolve_inputs(images: Any, labels: Any, axes: str | None) -> TrainingInputs:
    """Read a folder (or take a :class:`Collection`) given as ``images``; pass arrays on.

    Raises
    ------
    SegNetError
        When a folder or collection comes with ``labels``, arrays come without them,
        or ``axes`` contradict a collection's channels.
    """
    if isinstance(images, (str, os.PathLike)):
        if labels is not None:
            raise SegNetError("images is a folder: its labels/ are read with it; pass labels=None")
        images = read_collection(images)
    if isinstance(images, Collection):
        if labels is not None:
            raise SegNetError("a Collection holds its labels; pass labels=None")
        if axes is not None and axes != images.axes:
            raise SegNetError(f"the collection's images have axes {images.axes!r}, not {axes!r}")
        return TrainingInputs(list(images.images), list(images.labels), images.axes, images)
    if labels is None:
        raise SegNetError(
            "labels are needed: give one label image per image, or pass a collection "
            "folder (images/ and labels/) as images with labels=None"
        )
    return TrainingInputs(images, labels, axes)
