"""Sample images: real annotated nuclei shipped with the package, and synthetic ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .errors import SegNetError


def _blob_mask(rng: np.random.Generator, radii: np.ndarray, irregular: float) -> np.ndarray:
    """A star-convex blob: an ellipse (ellipsoid) whose radius wobbles with angle."""
    half = np.ceil(radii * (1 + irregular) + 1).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    # Random rotation of the in-plane axes.
    theta = rng.uniform(0, np.pi)
    y, x = grids[-2], grids[-1]
    yr = np.cos(theta) * y - np.sin(theta) * x
    xr = np.sin(theta) * y + np.cos(theta) * x
    coords = [*grids[:-2], yr, xr]
    r = np.sqrt(sum((c / rad) ** 2 for c, rad in zip(coords, radii)))
    ang = np.arctan2(yr / radii[-2], xr / radii[-1])
    wobble = np.zeros_like(ang)
    for k in range(2, 6):
        wobble += rng.normal(0, irregular / k) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    return r <= 1.0 + wobble


def synthetic_nuclei(
    shape: tuple[int, ...] = (512, 512),
    seed: int | None = 0,
    *,
    n_objects: int | None = None,
    diameter: float = 18.0,
    diameter_spread: float = 0.25,
    irregular: float = 0.12,
    touching: float = 0.5,
    bit_depth: int = 16,
    anisotropy: float = 1.0,
    noise: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a fluorescence-nuclei-like image and its exact instance labels.

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` or ``(Z, Y, X)``.
    seed : int, optional
        Random seed; the same seed gives the same data.
    n_objects : int, optional
        Number of nuclei; default fills about a third of the image.
    diameter : float
        Mean nucleus diameter in (in-plane) pixels.
    diameter_spread : float
        Relative standard deviation of the diameter.
    irregular : float
        How far outlines depart from ellipses.
    touching : float
        Fraction of nuclei placed against a neighbour (touching or overlapping).
    bit_depth : int
        8 or 16: the range of the returned image.
    anisotropy : float
        3D only: Z spacing relative to XY (objects look flatter in Z by this factor).
    noise : float
        Scales Poisson and Gaussian noise.

    Returns
    -------
    image : numpy.ndarray
        uint8 or uint16 image of ``shape``.
    labels : numpy.ndarray
        int32 instance labels of ``shape``, 0 = background, 1..N nuclei.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 8:
        raise SegNetError("shape must be (Y, X) or (Z, Y, X) with every side at least 8")
    if bit_depth not in (8, 16):
        raise SegNetError("bit_depth must be 8 or 16")
    rng = np.random.default_rng(seed)
    dims = len(shape)
    scale = np.array([1.0 / anisotropy, 1.0, 1.0])[-dims:]
    mean_vol = np.prod(diameter / 2 * scale) * (np.pi if dims == 2 else 4 / 3 * np.pi)
    if n_objects is None:
        n_objects = max(1, int(0.33 * np.prod(shape) / mean_vol))
    labels = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    centres: list[np.ndarray] = []
    placed = 0
    for _ in range(n_objects * 4):
        if placed >= n_objects:
            break
        d = diameter * np.exp(rng.normal(0, diameter_spread))
        ecc = rng.uniform(0.7, 1.0)
        radii = (
            np.array([d / 2 * scale[0], d / 2, d / 2 * ecc])[-dims:]
            if dims == 3
            else np.array([d / 2, d / 2 * ecc])
        )
        if centres and rng.random() < touching:
            base, d_base = centres[rng.integers(len(centres))]
            direction = rng.normal(size=dims)
            direction /= np.linalg.norm(direction) + 1e-9
            # Next to a neighbour: touching, pressed a little together, or just apart.
            gap = (d + d_base) / 2 * rng.uniform(0.85, 1.05)
            centre = base + direction * gap * np.array(scale)
        else:
            centre = rng.uniform(0, 1, dims) * np.array(shape)
        mask = _blob_mask(rng, radii, irregular)
        lo = np.round(centre).astype(int) - np.array(mask.shape) // 2
        sl_img, sl_m = [], []
        for a in range(dims):
            a0, a1 = max(lo[a], 0), min(lo[a] + mask.shape[a], shape[a])
            if a1 <= a0:
                break
            sl_img.append(slice(a0, a1))
            sl_m.append(slice(a0 - lo[a], a1 - lo[a]))
        else:
            m = mask[tuple(sl_m)]
            region = labels[tuple(sl_img)]
            # Mostly touch, rarely overlap: keep pixels already owned unless overlapping.
            own = m & ((region == 0) | (rng.random() < 0.1))
            if own.sum() < 0.5 * m.sum() or own.sum() < 6:
                continue
            placed += 1
            region[own] = placed
            mitotic = rng.random() < 0.05
            bright = rng.lognormal(0, 0.35) * (3.0 if mitotic else 1.0)
            tex = ndi.gaussian_filter(rng.normal(0, 1, m.shape).astype(np.float32), 1.5)
            # Nuclei are dimmer towards their rim (less chromatin in the optical section),
            # which is what lets a network see where touching nuclei meet.
            depth = ndi.distance_transform_edt(np.pad(own, 1))[(slice(1, -1),) * dims]
            rim = 0.6 + 0.4 * np.clip(depth / max(d / 5, 1.0), 0, 1)
            val = bright * rim * (1.0 + 0.25 * tex / (tex.std() + 1e-6))
            signal[tuple(sl_img)][own] = val[own]
            centres.append((centre, d))
    # Soft edges and out-of-focus haze, uneven background.
    img = ndi.gaussian_filter(signal, 1.0)
    img += 0.25 * ndi.gaussian_filter(signal, 6.0)
    yy = np.linspace(0, 1, shape[-2])[:, None]
    xx = np.linspace(0, 1, shape[-1])[None, :]
    gx, gy = rng.uniform(-1, 1, 2)
    bg = 0.08 + 0.05 * (gx * xx + gy * yy + 1)
    img = img + (bg if dims == 2 else bg[None])
    photons = rng.uniform(60, 200) / max(noise, 1e-3)
    img = rng.poisson(np.clip(img, 0, None) * photons).astype(np.float32) / photons
    img += rng.normal(0, 0.01 * noise, shape).astype(np.float32)
    top = 255 if bit_depth == 8 else rng.integers(2000, 40000)
    img = np.clip(img / max(np.percentile(img, 99.9), 1e-6) * 0.8 * top, 0, top)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return img.astype(dtype), labels


SAMPLES_DIR = Path(__file__).parent / "samples"

# Two validation images of the DSB2018 collection (CC0); samples/README.md names them.
REAL_SAMPLES = {
    "fluorescence": "dsb2018_fluorescence",
    "he": "dsb2018_he",
}


def real_nuclei(kind: str = "fluorescence") -> tuple[np.ndarray, np.ndarray]:
    """A real microscopy image of nuclei with its hand-made instance labels.

    Both come from the 2018 Data Science Bowl collection (BBBC038v1, CC0; Caicedo et
    al., Nature Methods 16, 2019), from the images held out to validate the bundled
    models, never trained on.

    Parameters
    ----------
    kind : str
        ``"fluorescence"``: a 520×696 grey image of stained nuclei (148 annotated);
        ``"he"``: a 256×320 RGB image of H&E-stained tissue (39 annotated).

    Returns
    -------
    image : numpy.ndarray
        uint8, ``(Y, X)`` or ``(Y, X, 3)``.
    labels : numpy.ndarray
        uint16 instance labels, 0 = background.
    """
    if kind not in REAL_SAMPLES:
        raise SegNetError(f"kind must be one of {sorted(REAL_SAMPLES)}, not {kind!r}")
    from skimage.io import imread

    stem = SAMPLES_DIR / REAL_SAMPLES[kind]
    image = np.asarray(imread(stem.with_suffix(".png")))
    labels = np.asarray(imread(stem.parent / f"{stem.name}_labels.png"))
    return image, labels


def synthetic_timelapse(
    n_frames: int = 5,
    shape: tuple[int, int] = (256, 256),
    seed: int | None = 0,
    *,
    step: float = 3.0,
    **nuclei,
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei moving a few pixels per frame, with labels that keep their ids.

    The first frame is :func:`synthetic_nuclei` (few touching nuclei unless
    ``touching`` is given); each nucleus, with a 2-pixel rim of its surroundings,
    then moves in a straight line in its own random direction, ``step`` pixels per
    frame. Nuclei leaving the image are cut off; where two meet, the later id covers
    the earlier.

    Parameters
    ----------
    n_frames : int
        Number of frames (at least 1).
    shape : tuple of int
        ``(Y, X)`` of each frame.
    seed : int, optional
        Random seed.
    step : float
        Pixels each nucleus moves per frame.
    **nuclei
        Further arguments of :func:`synthetic_nuclei`.

    Returns
    -------
    images : numpy.ndarray
        ``(T, Y, X)``, the dtype of :func:`synthetic_nuclei`.
    labels : numpy.ndarray
        int32 ``(T, Y, X)``; a nucleus has the same id in every frame.
    """
    from skimage.segmentation import expand_labels

    if not isinstance(n_frames, int) or n_frames < 1:
        raise SegNetError(f"n_frames must be an integer of at least 1, not {n_frames!r}")
    if len(shape) != 2:
        raise SegNetError(f"shape must be (Y, X), not {shape!r}")
    nuclei.setdefault("touching", 0.1)
    image, labels = synthetic_nuclei(shape, seed, **nuclei)
    rng = np.random.default_rng(None if seed is None else seed + 1)
    rim = expand_labels(labels, 2)
    background = image[rim == 0]
    n = int(labels.max())
    angle = rng.uniform(0, 2 * np.pi, n + 1)
    velocity = step * np.stack([np.sin(angle), np.cos(angle)], axis=1)
    where = ndi.find_objects(rim)
    images = np.empty((n_frames, *shape), image.dtype)
    out = np.zeros((n_frames, *shape), np.int32)
    for t in range(n_frames):
        images[t] = rng.choice(background, size=shape)
        for i, box in enumerate(where, 1):
            if box is None:
                continue
            ys, xs = np.nonzero(rim[box] == i)
            ys, xs = ys + box[0].start, xs + box[1].start
            dy, dx = np.round(velocity[i] * t).astype(int)
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < shape[0]) & (nx >= 0) & (nx < shape[1])
            ys, xs, ny, nx = ys[ok], xs[ok], ny[ok], nx[ok]
            images[t, ny, nx] = image[ys, xs]
            inside = labels[ys, xs] == i
            out[t, ny[inside], nx[inside]] = i
    return images, out
