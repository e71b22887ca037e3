"""Reading a collection: a folder of images with one instance-label image each.

Layout::

    FOLDER/
        images/<id>.tif      (or .tiff / .png): 2D grey, or RGB(A) colour
        labels/<id>.tif      integer ids, 0 = background, the image's height and width
        index.csv            optional: columns ``id`` and, optionally, ``modality``

Images and labels are matched by file stem. With an ``index.csv``, its rows name the
pairs (and their modality); without one, every image in ``images/`` is a pair.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SegNetError

__all__ = ["COLLECTION_SUFFIXES", "Collection", "read_collection"]

COLLECTION_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class Collection:
    """Annotated images read from a folder, all with the same channel count.

    Attributes
    ----------
    root : Path
        The folder read.
    ids : tuple of str
        Each pair's id (the file stem).
    images : tuple of numpy.ndarray
        ``(Y, X)`` grey images when ``channels`` is 1, else ``(Y, X, C)``; sizes may differ.
    labels : tuple of numpy.ndarray
        Instance labels ``(Y, X)``, integer ids (0 = background).
    modalities : tuple of str or None
        Each image's modality from ``index.csv`` (None where not given).
    channels : int
        Channels of every image.
    """

    root: Path
    ids: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    modalities: tuple[str | None, ...]
    channels: int

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def name(self) -> str:
        """The folder's name."""
        return self.root.name

    @property
    def axes(self) -> str:
        """Axes of the images: ``"YX"`` or ``"YXC"``."""
        return "YX" if self.channels == 1 else "YXC"

    def modality_counts(self) -> dict[str, int]:
        """Images per modality (``"unknown"`` where the index gives none)."""
        counts: dict[str, int] = {}
        for m in self.modalities:
            counts[m or "unknown"] = counts.get(m or "unknown", 0) + 1
        return counts


def read_array(path: Path) -> np.ndarray:
    """A TIFF (tifffile) or PNG (scikit-image) file as an array."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from skimage.io import imread

        return np.asarray(imread(path))
    except Exception as e:
        raise SegNetError(f"{path}: cannot read ({type(e).__name__}: {e})") from None


def image_channels(image: np.ndarray, path: Path) -> np.ndarray:
    """``image`` as ``(Y, X)`` (grey) or ``(Y, X, C)`` (colour; an alpha channel dropped)."""
    img = image
    if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[-1] not in (3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (2, 3)):
        if img.dtype.kind not in "biuf":
            raise SegNetError(f"{path}: image of dtype {img.dtype}; give numeric images")
        return img
    raise SegNetError(
        f"{path}: image of shape {image.shape}; a collection holds 2D grey (Y, X) "
        "or colour (Y, X, 3) images"
    )


def convert_channels(image: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """``image`` (grey or colour) with ``channels`` channels: grey repeated, colour averaged."""
    have = 1 if image.ndim == 2 else image.shape[-1]
    if have == channels:
        return image
    if channels == 1:
        return image.astype(np.float32).mean(axis=-1)
    if have == 1:
        return np.repeat(image[..., None], channels, axis=-1)
    raise SegNetError(f"{path}: a {have}-channel image cannot be made {channels}-channel")


def checked_labels(labels: np.ndarray, image_shape: tuple[int, ...], path: Path) -> np.ndarray:
    """Integer instance labels of ``image_shape``, or a :class:`SegNetError` naming ``path``."""
    lab = labels
    if lab.ndim == 3 and lab.shape[-1] == 1:
        lab = lab[..., 0]
    if lab.shape != image_shape:
        raise SegNetError(
            f"{path}: labels of shape {labels.shape} but the image is {image_shape} "
            "(height, width): they must match pixel for pixel"
        )
    if lab.dtype.kind == "f":
        if not (np.isfinite(lab).all() and np.all(np.mod(lab, 1) == 0)):
            raise SegNetError(f"{path}: labels hold non-integer values; give integer ids")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "biu":
        raise SegNetError(f"{path}: labels of dtype {lab.dtype}; give integer ids")
    if lab.dtype.kind == "i" and lab.size and lab.min() < 0:
        raise SegNetError(f"{path}: labels hold negative values; ids must be 0 or more")
    return lab.astype(np.int32) if lab.dtype.kind == "b" else lab


def files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files in ``folder`` by stem (a stem found twice is an error)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in COLLECTION_SUFFIXES:
            if p.stem in out:
                raise SegNetError(f"{p}: two files named {p.stem!r} in {folder}")
            out[p.stem] = p
    return out


def read_index(path: Path) -> list[tuple[str, str | None]]:
    """The ``(id, modality)`` rows of an ``index.csv``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "id" not in fields:
            raise SegNetError(f"{path}: needs an 'id' column (it has {fields})")
        rows = [(str(r["id"]).strip(), (r.get("modality") or "").strip() or None) for r in reader]
    if not rows:
        raise SegNetError(f"{path}: lists no images")
    return rows


def read_collection(
    path: str | os.PathLike,
    *,
    channels: int | None = None,
    ids: Iterable[str] | None = None,
) -> Collection:
    """Read a folder of ``images/`` and ``labels/`` pairs (see the module's layout).

    Parameters
    ----------
    path : path-like
        The folder.
    channels : int, optional
        Channels to read every image with: 1 (colour images averaged to grey) or 3
        (grey images repeated). None: as stored, which must be the same for all.
    ids : iterable of str, optional
        Read only these pairs (e.g. the training rows of a split), in this order.

    Returns
    -------
    Collection

    Raises
    ------
    SegNetError
        Naming the file: for an empty folder, an image without labels (or labels
        without an image), labels of another size than their image, labels with
        negative or non-integer values, images of mixed channel counts (without
        ``channels``), and ids that the folder does not hold. Nothing is written.
    """
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 2, 3)):
        raise SegNetError(f"channels must be 1, 2, 3 or None, not {channels!r}")
    root = Path(path)
    if not root.is_dir():
        raise SegNetError(f"{root}: no such folder")
    img_dir, lab_dir = root / "images", root / "labels"
    if not img_dir.is_dir():
        raise SegNetError(f"{root}: no 'images' folder (a collection holds images/ and labels/)")
    images = files_by_stem(img_dir)
    if not images:
        raise SegNetError(f"{img_dir}: holds no images (.tif, .tiff or .png)")
    labels = files_by_stem(lab_dir) if lab_dir.is_dir() else {}
    index = root / "index.csv"
    rows = read_index(index) if index.is_file() else [(s, None) for s in images]
    modality = dict(rows)
    if ids is None:
        wanted = [r[0] for r in rows]
        missing = sorted(set(labels) - set(images))
        if missing:
            raise SegNetError(f"{labels[missing[0]]}: labels without an image in {img_dir}")
    else:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            raise SegNetError(f"{root}: no ids given to read")
    for i in wanted:
        if i not in images:
            where = index if index.is_file() else root
            raise SegNetError(f"{where}: id {i!r} has no image in {img_dir}")
        if i not in labels:
            raise SegNetError(f"{images[i]}: image without labels (no {i}.* in {lab_dir})")
    out_images, out_labels = [], []
    first: tuple[int, Path] | None = None
    for i in wanted:
        img = image_channels(read_array(images[i]), images[i])
        n_ch = 1 if img.ndim == 2 else img.shape[-1]
        if channels is None:
            if first is None:
                first = (n_ch, images[i])
            elif n_ch != first[0]:
                raise SegNetError(
                    f"{images[i]}: {n_ch}-channel image, but {first[1].name} has {first[0]}; "
                    "read the collection with channels=1 or channels=3"
                )
        else:
            img = convert_channels(img, channels, images[i])
        out_labels.append(checked_labels(read_array(labels[i]), img.shape[:2], labels[i]))
        out_images.append(img)
    n = channels if channels is not None else (first[0] if first else 1)
    return Collection(
        root=root,
        ids=tuple(wanted),
        images=tuple(out_images),
        labels=tuple(out_labels),
        modalities=tuple(modality.get(i) for i in wanted),
        channels=int(n),
    )
