"""Sample data contributed to napari's File > Open Sample menu."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..data import real_nuclei, synthetic_nuclei


def sample_real_fluorescence():
    """A real fluorescence image of nuclei (DSB2018, CC0) with its hand-made labels."""
    image, labels = real_nuclei("fluorescence")
    return [
        (image, {"name": "nuclei (DSB2018 fluorescence)"}, "image"),
        (labels, {"name": "nuclei ground truth"}, "labels"),
    ]


def sample_real_he():
    """A real H&E-stained tissue image (DSB2018, CC0) with its hand-made nucleus labels."""
    image, labels = real_nuclei("he")
    return [
        (image, {"name": "H&E tissue (DSB2018)", "rgb": True}, "image"),
        (labels, {"name": "H&E nuclei ground truth"}, "labels"),
    ]


def sample_nuclei():
    """Synthetic 2D nuclei with their ground-truth instance labels."""
    image, labels = synthetic_nuclei((512, 512), seed=0)
    return [
        (image, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei ground truth"}, "labels"),
    ]


def sample_nuclei_3d():
    """A synthetic 3D stack of nuclei (Z spacing twice the XY spacing)."""
    image, labels = synthetic_nuclei((32, 192, 192), seed=0, anisotropy=2.0)
    return [
        (image, {"name": "nuclei 3D", "scale": (2.0, 1.0, 1.0)}, "image"),
        (labels, {"name": "nuclei 3D ground truth", "scale": (2.0, 1.0, 1.0)}, "labels"),
    ]


def sample_scribbles():
    """Nuclei with a few painted strokes: 1 = background, 2 = nucleus (0 = unlabelled)."""
    image, labels = synthetic_nuclei((384, 384), seed=2)
    rows = np.indices(labels.shape)[0]
    inner = ndi.binary_erosion(labels > 0, iterations=3)
    far = ~ndi.binary_dilation(labels > 0, iterations=4)
    scribbles = np.zeros(labels.shape, np.uint8)
    left = np.zeros(labels.shape, bool)
    left[:, : labels.shape[1] // 2] = True
    scribbles[inner & left & (rows % 4 == 0)] = 2
    scribbles[far & left & (rows % 24 == 0)] = 1
    return [
        (image, {"name": "nuclei (scribbles)"}, "image"),
        (scribbles, {"name": "scribbles"}, "labels"),
    ]
