"""Bundled models shipped inside the package (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..models.base import SegNet
from .bioimageio_import import is_package, load_bioimageio
from .model_files import SUFFIX, load_model_file

BUNDLED_DIR = Path(__file__).parent.parent / "models" / "bundled"


def available_models() -> list[str]:
    """Names of the bundled models, usable as ``load_model(name)``."""
    return sorted(p.stem for p in BUNDLED_DIR.glob(f"*{SUFFIX}"))


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    trust_code: bool = False,
) -> SegNet:
    """Load a bundled model by name, a model file or folder, or a bioimage.io package.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`available_models`, a path written by :func:`save_model`, or
        a bioimage.io model package (``.zip``, folder or ``rdf.yaml``; see
        :func:`~napari_segnet.io.bioimageio_import.load_bioimageio`).
    device : str or torch.device
        Where to put the weights.
    trust_code : bool
        bioimage.io packages only: allow a network defined by Python code in the package.

    Raises
    ------
    ModelFileError
        Unknown name, missing file, corrupt or pickled file, invalid package.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelFileError(
            "load_model takes a bundled model's name or a model file's path, not "
            f"{type(name_or_path).__name__}; bundled: {available_models() or 'none'}"
        )
    name = str(name_or_path)
    if isinstance(name_or_path, str) and name in available_models():
        model = load_model_file(BUNDLED_DIR / f"{name}{SUFFIX}", device)
        model.source = name
        return model
    p = Path(name_or_path)
    if not p.exists():
        raise ModelFileError(
            f"{name!r} is neither a bundled model ({available_models() or 'none bundled'}) "
            "nor an existing file: give a bundled model's name or the path of a .segnet file"
        )
    if is_package(p) or p.suffix == ".zip":  # a zip is never a .segnet file
        return load_bioimageio(p, trust_code=trust_code, device=device)
    return load_model_file(p, device)
