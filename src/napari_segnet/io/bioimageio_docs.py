"""The human-facing files of a bioimage.io package: the cover image and the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from skimage.color import label2rgb
from skimage.segmentation import find_boundaries

from ..models.base import SegNet


def _grey(image: np.ndarray) -> np.ndarray:
    """A 2D image scaled to [0, 1] between its 1st and 99.8th percentile."""
    lo, hi = np.percentile(image, [1.0, 99.8])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def cover_image(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image beside the image with its labels overlaid, as 8-bit RGB.

    Parameters
    ----------
    image : numpy.ndarray
        2D grey image (a volume's middle slice).
    labels : numpy.ndarray
        Integer labels of the same shape (instances or classes; 0 is not coloured).

    Returns
    -------
    numpy.ndarray
        ``(Y, 2 X, 3)`` uint8: two panels side by side, the 2:1 shape bioimage.io
        shows best.
    """
    grey = _grey(image.astype(np.float64))
    overlay = label2rgb(labels, image=grey, alpha=0.35, bg_label=0, image_alpha=1.0)
    overlay[find_boundaries(labels, mode="inner")] = (1.0, 1.0, 0.0)
    left = np.repeat(grey[..., None], 3, axis=-1)
    return (np.concatenate([left, overlay], axis=1) * 255).round().astype(np.uint8)


def _scores(meta: dict[str, Any]) -> str:
    rows = []
    for dataset, values in (meta.get("scores") or {}).items():
        if isinstance(values, dict):
            cells = ", ".join(
                f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
                for k, v in values.items()
            )
            rows.append(f"- {dataset}: {cells}")
    return "\n".join(rows) or "No scores were recorded with this model."


def readme(model: SegNet, name: str, description: str) -> str:
    """The package's documentation page (Markdown) from the model's config and metadata."""
    meta = model.meta
    training = meta.get("training") or {}
    config = ", ".join(f"{k}={v}" for k, v in model.config.items())
    classes = ", ".join(model.metadata.classes)
    trained = (
        f"{training.get('epochs')} epochs on patches of {training.get('patch_size')} px "
        f"(batch {training.get('batch_size')}, optimizer {training.get('optimizer')}, "
        f"learning rate {training.get('lr')})"
        if training
        else "No training record is stored with this model."
    )
    diameter = meta.get("diameter")
    size = (
        f"Objects were about {diameter:.1f} px across in the training data; rescale images "
        "so objects have that size for the best results."
        if diameter
        else "The model records no object size."
    )
    norm = model.metadata.normalization
    return f"""# {name}

{description}

Exported by napari-segnet from a `{model.arch}` network.

## Architecture

`build_model({config})` in `napari_segnet_architecture.py` (needs only PyTorch). The network
takes {model.in_channels} channel(s) and returns {model.n_classes} class scores
({classes}); the package's softmax turns them into probabilities. It needs input
sizes that are multiples of {model.divisor}; its receptive-field radius is
{model.receptive_radius} px, so {model.halo} px of halo on each side of a tile make tiled
results equal the untiled ones.

## Input

{norm.kind} normalisation ({norm.to_dict()}), per channel over the whole image.

## Training data

{meta.get("description") or "Not recorded."}

Training: {trained}.
{size}

## Validation

Scores recorded when the model was made:

{_scores(meta)}

The package's test input and test output were computed by napari-segnet; any
bioimage.io runner reproduces the output from the input (`bioimageio test`).
"""


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_cover(path: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """Save :func:`cover_image` as a PNG."""
    import imageio.v3 as iio

    iio.imwrite(path, cover_image(image, labels))
    return path
