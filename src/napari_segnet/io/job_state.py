"""The record of a resumable blockwise job: its settings and the blocks already done.

A job keeps, beside its outputs, a folder with ``job.json`` (what is being computed,
so a rerun only resumes the same job) and one file per finished block, written under
a temporary name and renamed, so a file that exists is always whole. A block's file is
written after its output chunks, so a block killed half-way is simply done again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SegNetError


def model_fingerprint(model) -> str:
    """A hash of a model's configuration and weights (same model, same hash)."""
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class JobState:
    """The job folder: ``job.json`` and ``blocks/<index>.npz``.

    Parameters
    ----------
    folder : path
        Where the record lives (created by :meth:`start`).
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @property
    def exists(self) -> bool:
        return (self.folder / "job.json").is_file()

    def settings(self) -> dict:
        """The settings the job was started with."""
        try:
            return json.loads((self.folder / "job.json").read_text())
        except (OSError, ValueError):
            return {}

    def start(self, settings: dict) -> None:
        """Create the folder and record the job's settings."""
        (self.folder / "blocks").mkdir(parents=True, exist_ok=True)
        _atomic_bytes(self.folder / "job.json", json.dumps(settings, sort_keys=True).encode())

    def matches(self, settings: dict) -> bool:
        return self.settings() == json.loads(json.dumps(settings, sort_keys=True))

    def done(self) -> set[int]:
        """Indices of the blocks whose record is there."""
        out = set()
        for p in (self.folder / "blocks").glob("*.npz"):
            if p.stem.isdigit():
                out.add(int(p.stem))
        return out

    def record(self, index: int, **arrays: np.ndarray) -> None:
        """Mark block ``index`` done, with its arrays (written whole or not at all)."""
        buf = _npz_bytes(arrays)
        _atomic_bytes(self.folder / "blocks" / f"{index}.npz", buf)

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.folder / "blocks" / f"{index}.npz") as f:
            return {k: f[k] for k in f.files}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def _atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: Path) -> None:
    """Refuse an output location that cannot be written, before any work."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SegNetError(f"cannot write to {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise SegNetError(f"cannot write to {folder}: {probe} is read-only")
