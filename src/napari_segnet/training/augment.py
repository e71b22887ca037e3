"""Patch augmentation: geometry moves image, target and weights together; intensity the image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class Augmentation:
    """What to apply to each training patch (each with its probability or range).

    Attributes
    ----------
    flip : bool
        Random flips of every spatial axis.
    rot90 : bool
        Random multiples of 90° in the YX plane (square patches).
    elastic : float
        Probability of the UNet paper's elastic deformation: random displacements on
        a coarse 3×3(×3) grid with standard deviation ``elastic_sigma`` pixels,
        interpolated smoothly (cubic) to every pixel.
    elastic_sigma : float
        Standard deviation of the grid displacements, in pixels.
    scale : tuple of float
        Range of the multiplicative intensity change (log-uniform).
    shift : float
        Standard deviation of the additive intensity change (normalised units).
    gamma : tuple of float
        Range of the gamma exponent (log-uniform).
    noise : float
        Largest standard deviation of added Gaussian noise (normalised units).
    """

    flip: bool = True
    rot90: bool = True
    elastic: float = 0.5
    elastic_sigma: float = 10.0
    scale: tuple[float, float] = (0.75, 1.33)
    shift: float = 0.1
    gamma: tuple[float, float] = (0.75, 1.33)
    noise: float = 0.05

    @classmethod
    def none(cls) -> Augmentation:
        return cls(False, False, 0.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0), 0.0)


def elastic_field(shape, sigma: float, rng: np.random.Generator, grid: int = 3) -> np.ndarray:
    """Smooth random displacement field ``(ndim, *shape)`` from a coarse grid."""
    coarse = rng.normal(0.0, sigma, (len(shape),) + (grid,) * len(shape))
    zoom = [s / grid for s in shape]
    return np.stack(
        [
            ndi.zoom(c, zoom, order=3, mode="nearest")[tuple(slice(0, s) for s in shape)]
            for c in coarse
        ]
    )


def augment(
    image: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    rng: np.random.Generator,
    aug: Augmentation,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one patch; ``image`` is ``(C, *spatial)``, the others ``(*spatial)``.

    Geometric changes move image, target and weights together (targets by nearest
    neighbour, so class ids and the ignore value stay exact); intensity changes
    touch the image only. The inputs are not modified.
    """
    nd = target.ndim
    img, tgt, wgt = image, target, weight
    if aug.flip:
        for ax in range(nd):
            if rng.random() < 0.5:
                img = np.flip(img, ax + 1)
                tgt = np.flip(tgt, ax)
                wgt = np.flip(wgt, ax)
    if aug.rot90 and tgt.shape[-1] == tgt.shape[-2]:
        k = int(rng.integers(4))
        if k:
            img = np.rot90(img, k, axes=(-2, -1))
            tgt = np.rot90(tgt, k, axes=(-2, -1))
            wgt = np.rot90(wgt, k, axes=(-2, -1))
    if aug.elastic > 0 and rng.random() < aug.elastic:
        field = elastic_field(tgt.shape, aug.elastic_sigma, rng)
        coords = np.indices(tgt.shape, dtype=np.float32) + field
        img = np.stack([ndi.map_coordinates(c, coords, order=1, mode="mirror") for c in img])
        tgt = ndi.map_coordinates(tgt, coords, order=0, mode="mirror")
        wgt = ndi.map_coordinates(wgt, coords, order=1, mode="mirror")
    img = np.ascontiguousarray(img, dtype=np.float32)
    if aug.gamma != (1.0, 1.0) and rng.random() < 0.5:
        g = float(np.exp(rng.uniform(np.log(aug.gamma[0]), np.log(aug.gamma[1]))))
        lo = img.min()
        rngv = max(float(img.max() - lo), 1e-6)
        img = ((img - lo) / rngv) ** g * rngv + lo
    if aug.scale != (1.0, 1.0):
        img = img * float(np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1]))))
    if aug.shift:
        img = img + float(rng.normal(0, aug.shift))
    if aug.noise:
        img = img + rng.normal(0, rng.uniform(0, aug.noise), img.shape).astype(np.float32)
    return (
        img.astype(np.float32, copy=False),
        np.ascontiguousarray(tgt),
        np.ascontiguousarray(wgt, dtype=np.float32),
    )
