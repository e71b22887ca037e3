"""Model files: JSON config + safetensors weights; nothing is ever unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import ModelFileError, NotAModelError
from ..models.base import SegNet
from ..models.registry import build_from_config

FORMAT = "napari-segnet"
FORMAT_VERSION = 1
SUFFIX = ".segnet"
_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"


def _header(model: SegNet) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config,
        "meta": model.meta,
        "history": model.history,
    }


def save_model(model: SegNet, path: str | os.PathLike) -> Path:
    """Save a model as config + safetensors weights.

    Parameters
    ----------
    model : SegNet
        A model from :func:`build_model`, :func:`train` or :func:`load_model`.
    path : path-like
        A file (``.segnet`` is appended if there is no suffix): one safetensors file
        whose metadata holds the JSON config. A path ending in a separator or an
        existing folder: ``config.json`` and ``model.safetensors`` inside it.

    Returns
    -------
    Path
        Where the model was written.

    Raises
    ------
    NotAModelError
        ``model`` is not a napari-segnet model (also a ``TypeError``).
    """
    if not isinstance(model, SegNet):
        raise NotAModelError(
            f"save_model expects a napari-segnet model, not {type(model).__name__}: "
            "pass one from build_model, train or load_model"
        )
    p = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    head = _header(model)
    as_folder = str(path).endswith(("/", os.sep)) or p.is_dir()
    if as_folder:
        p.mkdir(parents=True, exist_ok=True)
        save_file(state, str(p / _WEIGHTS), metadata={"format": FORMAT})
        (p / _CONFIG).write_text(json.dumps(head, indent=2))
        return p
    if not p.suffix:
        p = p.with_suffix(SUFFIX)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".partial")
    save_file(state, str(tmp), metadata={"napari_segnet": json.dumps(head)})
    os.replace(tmp, p)  # never leave a half-written file under the final name
    return p


def _read(path: Path) -> tuple[dict[str, Any], Path]:
    if path.is_dir():
        cfg, weights = path / _CONFIG, path / _WEIGHTS
        if not cfg.is_file() or not weights.is_file():
            raise ModelFileError(f"{path} is not a model folder (needs {_CONFIG} and {_WEIGHTS})")
        try:
            head = json.loads(cfg.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{cfg} is not valid JSON: {e}") from None
        return head, weights
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{path} is not a napari-segnet model file (not a safetensors file: {e}). "
            "Pickled models (.pt/.pth/.pkl) are refused because loading them can run code."
        ) from None
    if "napari_segnet" not in meta:
        raise ModelFileError(f"{path} is a safetensors file but not a napari-segnet model")
    try:
        head = json.loads(meta["napari_segnet"])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: corrupt model header: {e}") from None
    return head, path


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> SegNet:
    """Load a model file or folder written by :func:`save_model`."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"no model file at {p}")
    head, weights = _read(p)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ModelFileError(f"{p} is not a napari-segnet model file")
    version = head.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{p} has format version {version!r}; this napari-segnet reads up to "
            f"{FORMAT_VERSION}: update napari-segnet"
        )
    try:
        model = build_from_config(head["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{p}: invalid model config: {e}") from None
    try:
        with safe_open(str(weights), framework="pt", device=str(device)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ModelFileError(
            f"{p}: the weights do not match the config or are corrupt: {e}"
        ) from None
    model.meta.update(head.get("meta") or {})
    model.history = head.get("history") or {}
    model.source = str(p)
    return model.to(device).eval()
