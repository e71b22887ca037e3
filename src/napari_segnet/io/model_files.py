"""Model files: JSON config + safetensors weights; nothing is ever unpickled."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import ModelFileError, NotAModelError
from ..models.base import SegNet
from ..models.registry import ARCHITECTURES, build_from_config
from .atomic import atomic_write

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


def save_model(model: SegNet, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a model as config + safetensors weights.

    The file is written under a temporary name in the same folder and renamed when
    complete, so a failed or interrupted write leaves neither a half-written model nor
    a stray temporary file.

    Parameters
    ----------
    model : SegNet
        A model from :func:`build_model`, :func:`train` or :func:`load_model`.
    path : path-like
        A file (``.segnet`` is appended if there is no suffix): one safetensors file
        whose metadata holds the JSON config. A path ending in a separator or an
        existing folder: ``config.json`` and ``model.safetensors`` inside it.
    overwrite : bool
        Replace an existing model file (or the files of a model folder).

    Returns
    -------
    Path
        Where the model was written.

    Raises
    ------
    NotAModelError
        ``model`` is not a napari-segnet model (also a ``TypeError``).
    ModelFileError
        An empty path, an existing model without ``overwrite=True``, or a place that
        cannot be written (the message says why).
    """
    if not isinstance(model, SegNet):
        raise NotAModelError(
            f"save_model expects a napari-segnet model, not {type(model).__name__}: "
            "pass one from build_model, train or load_model"
        )
    if model.config.get("arch") not in ARCHITECTURES:
        raise NotAModelError(
            f"save_model writes napari-segnet networks; this {model.config.get('arch')} model "
            "came from a bioimage.io package: keep that package and load it again"
        )
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ModelFileError(f"save_model needs a file path, not {path!r}")
    p = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    head = _header(model)
    as_folder = str(path).endswith(("/", os.sep)) or p.is_dir()
    if not as_folder and not p.suffix:
        p = p.with_suffix(SUFFIX)
    targets = [p / _WEIGHTS, p / _CONFIG] if as_folder else [p]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ModelFileError(
            f"{existing[0]} exists already; choose another path or pass overwrite=True"
        )
    try:
        folder = p if as_folder else p.parent
        folder.mkdir(parents=True, exist_ok=True)
        if as_folder:
            atomic_write(p / _WEIGHTS, lambda t: save_file(state, t, metadata={"format": FORMAT}))
            atomic_write(p / _CONFIG, lambda t: Path(t).write_text(json.dumps(head, indent=2)))
        else:
            meta = {"napari_segnet": json.dumps(head)}
            atomic_write(p, lambda t: save_file(state, t, metadata=meta))
    except (OSError, SafetensorError) as e:
        raise ModelFileError(f"cannot write the model to {p}: {e}") from None
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


# Limits on what a model file may ask for, checked before anything is allocated: far
# above any useful segmentation network, far below a memory bomb.
LIMITS = {"in_channels": 64, "n_classes": 1024, "width": 512, "depth": 8, "dims": 3}
MAX_PARAMETER_BYTES = 2 * 2**30


def check_header(head: Any, where: str) -> dict[str, Any]:
    """The header's config, after checking every field a crafted file could abuse.

    Raises
    ------
    ModelFileError
        Wrong types, unknown format or version, values beyond :data:`LIMITS`.
    """
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a napari-segnet model file")
    version = head.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{where} has format version {version!r}; this napari-segnet reads up to "
            f"{FORMAT_VERSION}: update napari-segnet"
        )
    config = head.get("config")
    if not isinstance(config, dict):
        raise ModelFileError(f"{where}: the model config must be a JSON object")
    for key in ("meta", "history"):
        if head.get(key) is not None and not isinstance(head[key], dict):
            raise ModelFileError(f"{where}: {key!r} must be a JSON object, not {head[key]!r}")
    for key, limit in LIMITS.items():
        value = config.get(key)
        if value is None and key in ("width", "depth"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            raise ModelFileError(
                f"{where}: {key} = {value!r} is outside what a model file may ask for "
                f"(an integer from 1 to {limit})"
            )
    return config


def _expected_shapes(config: dict[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of the architecture, built without allocating."""
    try:
        with torch.device("meta"):
            skeleton = build_from_config(config)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{where}: invalid model config: {e}") from None
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _check_weights(weights: Path, expected: dict[str, tuple[int, ...]], where: str) -> None:
    """The file's tensors must be exactly the architecture's, within the memory budget."""
    nbytes = 4 * sum(math.prod(s) for s in expected.values())
    if nbytes > MAX_PARAMETER_BYTES:
        raise ModelFileError(
            f"{where}: the architecture asks for {nbytes / 2**30:.1f} GiB of weights, more "
            f"than the {MAX_PARAMETER_BYTES / 2**30:.0f} GiB a model file may use"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ModelFileError(f"{where}: corrupt weights: {e}") from None
    if found != expected:
        missing = sorted(set(expected) - set(found))[:3]
        extra = sorted(set(found) - set(expected))[:3]
        wrong = [k for k in expected if k in found and found[k] != expected[k]][:3]
        raise ModelFileError(
            f"{where}: the weights do not match the config (missing {missing}, "
            f"unexpected {extra}, wrong shape {wrong})"
        )


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> SegNet:
    """Load a model file or folder written by :func:`save_model`.

    The header is checked (types, format version, :data:`LIMITS`) and the tensor shapes
    in the file are compared with the architecture before the network is built, so a
    crafted file cannot make this allocate more than :data:`MAX_PARAMETER_BYTES`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ModelFileError(
            f"a model file path must be a string or a path, not {type(path).__name__}"
        )
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"no model file at {p}")
    head, weights = _read(p)
    config = check_header(head, str(p))
    _check_weights(weights, _expected_shapes(config, str(p)), str(p))
    try:
        model = build_from_config(config)
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
