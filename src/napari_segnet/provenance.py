"""What made a result: the model (and a hash of its weights), the parameters, the
software version and the time, as a JSON-able dict.

``segment`` attaches it to its result (``SegmentResult.provenance``); the napari
panels copy it into each output layer's ``metadata`` and the command line writes it
next to each output file as ``<output>.json``.

The weights hash (``weights_sha256``) is taken over the model's state dict, so the
same weights give the same hash whichever file (or none) they came from: for every
tensor in the order of its name, the name, the dtype, the shape and the raw bytes
(C order, CPU) go into one SHA-256. When the model was read from a file,
``file_sha256`` is the SHA-256 of that file's bytes too (bundled models are files
of the package).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["file_sha256", "provenance", "refinement", "to_json", "weights_sha256"]

SCHEMA = "napari-segnet-provenance/1"


def weights_sha256(model) -> str:
    """SHA-256 (hex) of a model's state dict; see the module notes for what goes in."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    st = os.stat(path)
    return _file_sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time too: a rewritten file is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_record(model) -> dict[str, Any]:
    """Name, source, file path (when read from a file), architecture and hashes."""
    source = getattr(model, "source", None)
    meta = getattr(model, "meta", {}) or {}
    record: dict[str, Any] = {
        "name": str(meta.get("name") or source or model.arch),
        "source": source,
        "arch": model.arch,
        "path": None,
        "weights_sha256": weights_sha256(model),
    }
    path = _model_file(source)
    if path is not None:
        record["path"] = str(path.resolve())
        record["file_sha256"] = file_sha256(path)
    return record


def _model_file(source: str | None) -> Path | None:
    """The file a model was read from: a bundled model's own file, or its path."""
    from .io.bundled import BUNDLED_DIR, available_models
    from .io.model_files import SUFFIX

    if not source:
        return None
    if source in available_models():
        return BUNDLED_DIR / f"{source}{SUFFIX}"
    return Path(source) if Path(source).is_file() else None


def now_utc() -> str:
    """The time now, ISO 8601 in UTC (``2026-01-31T12:00:00+00:00``)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(model, parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The provenance record of one run.

    Parameters
    ----------
    model : SegNet
        The model that ran.
    parameters : dict
        Every parameter the run used (given and resolved: tile size, diameter,
        thresholds, CRF settings, device, ...); made JSON-able here.
    **extra
        Further top-level entries (e.g. ``input`` with the image's shape and axes).

    Returns
    -------
    dict
        ``schema``, ``software`` (name and version), ``time`` (ISO 8601 UTC),
        ``model`` (:func:`model_record`), ``parameters`` and the extras; every value
        JSON-able.
    """
    from ._version import __version__

    record = {
        "schema": SCHEMA,
        "software": {"name": "napari-segnet", "version": __version__},
        "time": now_utc(),
        "model": model_record(model),
        "parameters": jsonable(parameters),
    }
    record.update(jsonable(extra))
    return record


def refinement(parameters: dict[str, Any], previous: dict | None, **extra: Any) -> dict:
    """The record of a step that needs no model (e.g. a CRF run on earlier results):
    its parameters, the version and the time, and the record of what it refined
    (``previous``) when known."""
    from ._version import __version__

    record = {
        "schema": SCHEMA,
        "software": {"name": "napari-segnet", "version": __version__},
        "time": now_utc(),
        "parameters": jsonable(parameters),
        "previous": previous or None,
    }
    record.update(jsonable(extra))
    return record


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into JSON types;
    anything else unknown becomes its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def to_json(record: dict[str, Any]) -> str:
    """The record as indented JSON text."""
    return json.dumps(record, indent=2, sort_keys=False) + "\n"
