"""Sample data contributed to napari's File > Open Sample menu."""

from __future__ import annotations

from ..data import synthetic_nuclei


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
