"""Patch augmentation: geometry moves image, target and weights together; intensity the image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed

from ..errors import SegNetError


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
    zoom : float
        Probability of a scale jitter: the patch is resampled from a source region
        ``1 / z`` its size, so objects grow ``z`` times (``z`` log-uniform in
        ``zoom_range``). Labels are resampled by nearest neighbour and the instance
        target and weights recomputed from them (see :class:`PatchSampler`).
    zoom_range : tuple of float
        Range of the zoom factor ``z``.
    blur : float
        Probability of a Gaussian blur of the image.
    blur_sigma : tuple of float
        Range of the blur's standard deviation, in pixels.
    invert : float
        Probability of inverting the intensities of a single-channel image
        (``1 - x`` in normalised units): dark objects on a bright background
        (brightfield) become bright on dark (fluorescence) and the other way round.
    stain : float
        Probability of a stain colour jitter of a 3-channel (RGB) image, in the
        haematoxylin-eosin-DAB space of :func:`skimage.color.rgb2hed`.
    stain_sigma : float
        Size of the stain jitter: each HED channel ``h`` becomes ``a·h + b`` with
        ``a`` in ``1 ± stain_sigma`` and ``b`` in ``± stain_sigma`` times the
        channel's range in the patch (uniform).
    """

    flip: bool = True
    rot90: bool = True
    elastic: float = 0.5
    elastic_sigma: float = 10.0
    scale: tuple[float, float] = (0.75, 1.33)
    shift: float = 0.1
    gamma: tuple[float, float] = (0.75, 1.33)
    noise: float = 0.05
    zoom: float = 0.0
    zoom_range: tuple[float, float] = (0.5, 2.0)
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    invert: float = 0.0
    stain: float = 0.0
    stain_sigma: float = 0.05

    def __post_init__(self) -> None:
        for name in ("elastic", "zoom", "blur", "invert", "stain"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise SegNetError(f"Augmentation.{name} is a probability, not {value!r}")
        for name in ("zoom_range", "blur_sigma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise SegNetError(f"Augmentation.{name} must be (low, high) with 0 < low <= high")
        if self.stain_sigma < 0:
            raise SegNetError("Augmentation.stain_sigma must not be negative")

    @classmethod
    def none(cls) -> Augmentation:
        return cls(False, False, 0.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0), 0.0)

    @classmethod
    def microscopy(cls) -> Augmentation:
        """The defaults plus the options for mixed real data: scale jitter (0.5-2×),
        blur, inversion of grey images and stain jitter of colour ones."""
        return cls(zoom=0.5, blur=0.2, invert=0.5, stain=0.5)

    def draw_zoom(self, rng: np.random.Generator) -> float:
        """A zoom factor for one patch (1.0, drawing nothing, when the jitter is off)."""
        if self.zoom <= 0 or rng.random() >= self.zoom:
            return 1.0
        lo, hi = np.log(self.zoom_range[0]), np.log(self.zoom_range[1])
        return float(np.exp(rng.uniform(lo, hi)))


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
    img = appearance(img, rng, aug)
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


def jitter_stain(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """A ``(3, ...)`` RGB image (normalised, about 0..1) with its HED stains jittered.

    Colour deconvolution (Beer-Lambert optical density and the stain matrix of
    :func:`skimage.color.rgb2hed`, without its clipping, so that no jitter gives the
    image back), each stain ``h`` becomes ``a·h + b``, and the colours are recomposed.
    """
    rgb = np.moveaxis(image, 0, -1).astype(np.float64)
    clipped = np.clip(rgb, 1e-3, 1.0)
    stains = -np.log(clipped) @ hed_from_rgb
    a = rng.uniform(1 - sigma, 1 + sigma, 3)
    # The shift is relative to each stain's range in the patch.
    b = rng.uniform(-sigma, sigma, 3) * np.ptp(stains.reshape(-1, 3), axis=0)
    out = np.exp(-((stains * a + b) @ rgb_from_hed))
    # What clipping removed (values beyond 0..1) is added back unchanged.
    return np.moveaxis(out + (rgb - clipped), -1, 0).astype(np.float32)


def appearance(img: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Blur, stain jitter (RGB) and inversion (grey) of a ``(C, *spatial)`` float32 patch.

    Each draws from ``rng`` only when its probability is above zero, so runs without
    them sample exactly as before.
    """
    if aug.blur > 0 and rng.random() < aug.blur:
        s = float(rng.uniform(*aug.blur_sigma))
        img = np.stack([ndi.gaussian_filter(c, s, mode="mirror") for c in img])
    if aug.stain > 0 and img.shape[0] == 3 and rng.random() < aug.stain:
        img = jitter_stain(img, rng, aug.stain_sigma)
    if aug.invert > 0 and img.shape[0] == 1 and rng.random() < aug.invert:
        img = 1.0 - img
    return img


def resample(
    array: np.ndarray, shape: tuple[int, ...], order: int, smooth: bool = False
) -> np.ndarray:
    """``array`` resampled to ``shape`` (pixel centres aligned), by spline ``order``.

    With ``smooth`` a downsized array is low-pass filtered first (against aliasing).
    Nearest neighbour (``order=0``) keeps the dtype and the values exactly.
    """
    factors = np.array(array.shape, float) / np.array(shape, float)
    src = array
    if smooth and (factors > 1).any():
        src = ndi.gaussian_filter(array.astype(np.float32), np.maximum(factors - 1, 0) / 2)
    return ndi.affine_transform(
        src,
        factors,
        offset=0.5 * factors - 0.5,
        output_shape=tuple(shape),
        order=order,
        mode="nearest",
    )
