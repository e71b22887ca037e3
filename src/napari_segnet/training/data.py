"""Turning user arrays into normalised training pairs, splits and random patches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.axes import make_layout
from ..engine.normalize import apply_normalization, normalization_stats
from ..errors import SegNetError
from .augment import Augmentation, augment
from .targets import IGNORE


@dataclass
class Pair:
    """One normalised image ``(C, *spatial)`` with its class map, weights and labels."""

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    labels: np.ndarray  # the user's labels (instances: for validation scores)

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
    axes: str | None,
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
        ax = axes or guess_train_axes(img.shape, dims, channels)
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
                pairs.append(Pair(apply_normalization(x[idx], stats[idx]), tgt, w, lab_s))
        else:
            s = stats.reshape(-1, 2)
            tgt, w = make_target(lab)
            pairs.append(Pair(apply_normalization(x, s), tgt, w, lab))
    return pairs, int(channels)


def split_validation(
    pairs: list[Pair], fraction: float, patch: tuple[int, ...], rng: np.random.Generator
) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole pairs (four or more) or a strip at the end of each wide-enough pair."""
    if fraction <= 0:
        return pairs, []
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
        train.append(Pair(p.image[sl_a], p.target[sl_a], p.weight[sl_a], p.labels[sl_a]))
        vp = Pair(p.image[sl_b], p.target[sl_b], p.weight[sl_b], p.labels[sl_b])
        if vp.n_labelled:
            val.append(vp)
    return train, val


class PatchSampler:
    """Random patches (padded where an image is smaller), augmented, in batches."""

    def __init__(
        self,
        pairs: list[Pair],
        patch: tuple[int, ...],
        aug: Augmentation,
        rng: np.random.Generator,
        sparse: bool,
    ):
        self.pairs = pairs
        self.patch = patch
        self.aug = aug
        self.rng = rng
        self.sparse = sparse
        sizes = np.array([max(p.n_labelled, 1) for p in pairs], float)
        self.p_pair = sizes / sizes.sum()
        self.labelled = [np.flatnonzero(p.target != IGNORE) for p in pairs] if sparse else None

    def _crop(self, pair: Pair, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = pair.target.shape
        rng = self.rng
        if self.sparse and rng.random() < 0.7 and len(self.labelled[k]):
            centre = np.unravel_index(rng.choice(self.labelled[k]), shape)
            start = [
                int(c) - s // 2 + int(rng.integers(-s // 4, s // 4 + 1))
                for c, s in zip(centre, self.patch)
            ]
        else:
            start = [
                int(rng.integers(min(0, n - s), max(n - s, 0) + 1))
                for n, s in zip(shape, self.patch)
            ]
        start = [
            min(max(a, min(0, n - s)), max(n - s, 0)) for a, n, s in zip(start, shape, self.patch)
        ]
        src = tuple(slice(max(a, 0), min(a + s, n)) for a, s, n in zip(start, self.patch, shape))
        pads = [(max(-a, 0), max(a + s - n, 0)) for a, s, n in zip(start, self.patch, shape)]
        img = pair.image[(slice(None), *src)]
        tgt = pair.target[src]
        wgt = pair.weight[src]
        if any(p != (0, 0) for p in pads):
            img = np.pad(img, [(0, 0), *pads], mode="reflect" if min(img.shape[1:]) > 1 else "edge")
            tgt = np.pad(tgt, pads, constant_values=IGNORE)
            wgt = np.pad(wgt, pads)
        return img, tgt, wgt

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        imgs, tgts, wgts = [], [], []
        for _ in range(n):
            k = int(self.rng.choice(len(self.pairs), p=self.p_pair))
            i, t, w = self._crop(self.pairs[k], k)
            i, t, w = augment(i, t, w, self.rng, self.aug)
            imgs.append(i)
            tgts.append(t)
            wgts.append(w)
        return np.stack(imgs), np.stack(tgts), np.stack(wgts)
