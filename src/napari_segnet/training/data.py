"""Turning user arrays into normalised training pairs, splits and random patches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..engine.axes import make_layout
from ..engine.normalize import apply_normalization, normalization_stats
from ..errors import SegNetError
from .augment import Augmentation, augment, resample
from .targets import IGNORE

# Makes the class map and loss weights of a label image (``make_target`` with the
# run's settings bound).
TargetMaker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Pair:
    """One normalised image ``(C, *spatial)`` with its class map, weights and labels."""

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    labels: np.ndarray  # the user's labels (instances: for validation scores)
    source: int = 0  # index of the image the pair comes from
    index: tuple[int, ...] = ()  # the slice of the image's stack (empty: the whole image)
    start: float = 0.0  # where the pair begins along X, as a fraction of the image's width

    @property
    def n_labelled(self) -> int:
        return int((self.target != IGNORE).sum())


def as_list(x) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def guess_train_axes(shape: tuple[int, ...], dims: int, in_channels: int | None) -> str:
    """Axes of a training image: spatial only, or with a channel axis first or last."""
    sp = "ZYX"[-dims:] if dims == 3 else "YX"
    nd = len(shape)
    if nd == dims:
        return sp
    if nd == dims + 1:
        if dims == 2 and in_channels in (None, 1) and min(shape) > 8:
            return "Z" + sp  # a stack of 2D images
        if in_channels is not None and in_channels > 1:
            if shape[-1] == in_channels:
                return sp + "C"
            if shape[0] == in_channels:
                return "C" + sp
        return sp + "C" if shape[-1] <= shape[0] else "C" + sp
    if nd == dims + 2 and dims == 2:
        return "Z" + sp + "C" if shape[-1] <= 8 else "ZC" + sp
    raise SegNetError(f"cannot use a {nd}D image of shape {shape} to train a {dims}D model")


def load_pairs(
    images: list,
    labels: list,
    *,
    dims: int,
    in_channels: int | None,
    axes: str | list[str] | None,
    norm_spec: dict,
    make_target,
) -> tuple[list[Pair], int]:
    """Check, normalise and split images into per-2D-slice or per-volume pairs.

    Returns the pairs and the number of image channels.
    """
    if len(images) == 0:
        raise SegNetError("no training images given")
    if len(images) != len(labels):
        raise SegNetError(f"{len(images)} images but {len(labels)} label images")
    pairs: list[Pair] = []
    channels = in_channels
    for i, (img, lab) in enumerate(zip(images, labels)):
        img = np.asarray(img)
        lab = np.asarray(lab)
        if img.size == 0:
            raise SegNetError(f"image {i} is empty")
        if img.dtype.kind not in "biuf":
            raise SegNetError(f"image {i} has dtype {img.dtype}; give numeric images")
        if img.dtype.kind == "f" and np.isnan(img).any():
            raise SegNetError(f"image {i} contains NaN values")
        given = axes[i] if isinstance(axes, (list, tuple)) else axes
        ax = given or guess_train_axes(img.shape, dims, channels)
        n_ch = img.shape[ax.index("C")] if "C" in ax else 1
        if channels is None:
            channels = n_ch
        layout = make_layout(img.shape, ax, dims, channels)
        spatial_shape = tuple(img.shape[a] for a in range(img.ndim) if ax[a] != "C")
        if lab.shape != spatial_shape:
            raise SegNetError(
                f"labels {i} have shape {lab.shape} but image {i} is {spatial_shape} "
                "(without its channel axis): they must match pixel for pixel"
            )
        stats = normalization_stats(img, layout, norm_spec)
        # Channel first, outer axes (slices) next.
        x = np.moveaxis(img, layout.channel, 0) if layout.channel is not None else img[None]
        outer = len(layout.outer)
        if outer:
            x = np.moveaxis(x, 0, outer)  # (outer..., C, spatial)
            for idx in np.ndindex(*x.shape[:outer]):
                lab_s = lab[idx]
                # Slices nobody annotated (all zero) are left out, not taken as background.
                if not (lab_s > 0).any():
                    continue
                tgt, w = make_target(lab_s)
                norm = apply_normalization(x[idx], stats[idx])
                pairs.append(Pair(norm, tgt, w, lab_s, i, tuple(int(j) for j in idx)))
        else:
            s = stats.reshape(-1, 2)
            tgt, w = make_target(lab)
            pairs.append(Pair(apply_normalization(x, s), tgt, w, lab, i))
    return pairs, int(channels)


def split_by_image(
    pairs: list[Pair],
    fraction: float,
    rng: np.random.Generator,
    groups: Sequence[str | None] | None = None,
) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole images (all pairs of an image go to one side), per group.

    Each group (e.g. imaging modality; ``groups[i]`` is image ``i``'s) of two or
    more images gives about ``fraction`` of them, at least one, to validation, so
    every kind of image is validated; at least one image is held out and at least
    one kept for training.
    """
    sources = sorted({p.source for p in pairs})
    if len(sources) < 2:
        return pairs, []
    strata: dict[str | None, list[int]] = {}
    for src in sources:
        strata.setdefault(None if groups is None else groups[src], []).append(src)
    held: list[int] = []
    for key in sorted(strata, key=str):
        members = strata[key]
        order = rng.permutation(len(members))
        n_val = max(1, round(len(members) * fraction)) if len(members) >= 2 else 0
        held += [members[i] for i in order[:n_val]]
    if not held:
        held = [sources[int(rng.integers(len(sources)))]]
    if len(held) == len(sources):
        held = held[1:]
    val_set = set(held)
    train = [p for p in pairs if p.source not in val_set]
    val = [p for p in pairs if p.source in val_set and p.n_labelled]
    return train, val


def split_validation(
    pairs: list[Pair],
    fraction: float,
    patch: tuple[int, ...],
    rng: np.random.Generator,
    *,
    by_image: bool = False,
    groups: Sequence[str | None] | None = None,
) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole pairs (four or more) or a strip at the end of each wide-enough pair.

    With ``by_image`` (a collection of images), whole images are held out, stratified
    by ``groups`` (see :func:`split_by_image`), whenever there are two or more.
    """
    if fraction <= 0:
        return pairs, []
    if by_image and len({p.source for p in pairs}) >= 2:
        return split_by_image(pairs, fraction, rng, groups)
    if len(pairs) >= 4:
        n_val = max(1, round(len(pairs) * fraction))
        order = rng.permutation(len(pairs))
        val = [pairs[i] for i in sorted(order[:n_val])]
        train = [pairs[i] for i in sorted(order[n_val:])]
        return train, val
    train, val = [], []
    for p in pairs:
        width = p.target.shape[-1]
        cut = round(width * (1 - fraction))
        if cut < patch[-1] or width - cut < 16:
            train.append(p)
            continue
        sl_a = (Ellipsis, slice(0, cut))
        sl_b = (Ellipsis, slice(cut, None))
        a = (p.image[sl_a], p.target[sl_a], p.weight[sl_a], p.labels[sl_a], p.source, p.index)
        train.append(Pair(*a))
        b = (p.image[sl_b], p.target[sl_b], p.weight[sl_b], p.labels[sl_b], p.source, p.index)
        vp = Pair(*b, start=cut / width)
        if vp.n_labelled:
            val.append(vp)
    return train, val


class PatchSampler:
    """Random patches (padded where an image is smaller), augmented, in batches.

    Parameters
    ----------
    pairs : list of Pair
        Training pairs.
    patch : tuple of int
        Patch shape.
    aug : Augmentation
        Augmentation of each patch.
    rng : numpy.random.Generator
        All random draws.
    sparse : bool
        Scribbles: patches are centred on labelled pixels most of the time.
    retarget : callable, optional
        Remakes the class map and weights of zoomed label patches (instances: the
        boundary class is one pixel wide at every zoom). Without it, the class map
        is resampled by nearest neighbour and the weights linearly.
    """

    def __init__(
        self,
        pairs: list[Pair],
        patch: tuple[int, ...],
        aug: Augmentation,
        rng: np.random.Generator,
        sparse: bool,
        retarget: TargetMaker | None = None,
    ):
        self.pairs = pairs
        self.patch = patch
        self.aug = aug
        self.rng = rng
        self.sparse = sparse
        self.retarget = retarget
        sizes = np.array([max(p.n_labelled, 1) for p in pairs], float)
        self.p_pair = sizes / sizes.sum()
        self.labelled = [np.flatnonzero(p.target != IGNORE) for p in pairs] if sparse else None

    def region(self, pair: Pair, k: int, size: tuple[int, ...]) -> list[int]:
        """Start of a random region of ``size`` in ``pair`` (negative: padded)."""
        shape = pair.target.shape
        rng = self.rng
        if self.sparse and rng.random() < 0.7 and len(self.labelled[k]):
            centre = np.unravel_index(rng.choice(self.labelled[k]), shape)
            start = [
                int(c) - s // 2 + int(rng.integers(-s // 4, s // 4 + 1))
                for c, s in zip(centre, size)
            ]
        else:
            start = [
                int(rng.integers(min(0, n - s), max(n - s, 0) + 1)) for n, s in zip(shape, size)
            ]
        return [min(max(a, min(0, n - s)), max(n - s, 0)) for a, n, s in zip(start, shape, size)]

    def crop(self, pair: Pair, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A patch of ``pair`` (zoomed when the augmentation draws a zoom)."""
        zoom = self.aug.draw_zoom(self.rng)
        size = self.patch if zoom == 1.0 else tuple(max(1, round(s / zoom)) for s in self.patch)
        start = self.region(pair, k, size)
        shape = pair.target.shape
        src = tuple(slice(max(a, 0), min(a + s, n)) for a, s, n in zip(start, size, shape))
        pads = [(max(-a, 0), max(a + s - n, 0)) for a, s, n in zip(start, size, shape)]
        img = pair.image[(slice(None), *src)]
        tgt = pair.target[src]
        wgt = pair.weight[src]
        padded = any(p != (0, 0) for p in pads)
        if padded:
            img = np.pad(img, [(0, 0), *pads], mode="reflect" if min(img.shape[1:]) > 1 else "edge")
            tgt = np.pad(tgt, pads, constant_values=IGNORE)
            wgt = np.pad(wgt, pads)
        if zoom == 1.0:
            return img, tgt, wgt
        img = np.stack([resample(c, self.patch, 1, smooth=True) for c in img])
        if self.retarget is None:
            return img, resample(tgt, self.patch, 0), resample(wgt, self.patch, 1)
        lab = pair.labels[src]
        if padded:
            lab = np.pad(lab, pads)
        tgt_z, wgt_z = self.retarget(resample(lab, self.patch, 0))
        outside = resample(tgt, self.patch, 0) == IGNORE
        tgt_z[outside] = IGNORE
        wgt_z[outside] = 0.0
        return img.astype(np.float32), tgt_z, wgt_z

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` augmented patches: images ``(n, C, *patch)``, class maps and weights."""
        imgs, tgts, wgts = [], [], []
        for _ in range(n):
            k = int(self.rng.choice(len(self.pairs), p=self.p_pair))
            i, t, w = self.crop(self.pairs[k], k)
            i, t, w = augment(i, t, w, self.rng, self.aug)
            imgs.append(i)
            tgts.append(t)
            wgts.append(w)
        return np.stack(imgs), np.stack(tgts), np.stack(wgts)
