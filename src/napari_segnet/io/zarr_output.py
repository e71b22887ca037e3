"""Result arrays in a zarr group, marked complete only when everything was written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import SegNetError

COMPLETE_ATTR = "napari_segnet_complete"


class ZarrOutput:
    """A zarr group that receives ``probabilities``, ``semantic`` and ``instances``.

    Opened as a context manager: a store created here is removed again when the block
    fails or is cancelled, and the group's ``napari_segnet_complete`` attribute turns
    True only through :meth:`complete`.

    Parameters
    ----------
    output : str, path or zarr.Group
        A new path (an existing one is refused), or an open group.
    """

    def __init__(self, output):
        import zarr

        self.created: Path | None = None
        if isinstance(output, (str, os.PathLike)):
            p = Path(output)
            if p.exists():
                raise SegNetError(f"output {p} exists already; choose a new path")
            self.group = zarr.open_group(str(p), mode="w")
            self.created = p
        elif isinstance(output, zarr.Group):
            self.group = output
        else:
            raise SegNetError("output must be a path or a zarr group")
        self.arrays: dict = {}
        self.group.attrs[COMPLETE_ATTR] = False

    def __enter__(self) -> ZarrOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)

    def create(self, name: str, shape: tuple[int, ...], dtype, chunks: tuple[int, ...]):
        """A new array; ``chunks`` gives the trailing (spatial) chunk edges."""
        lead = (1,) * (len(shape) - len(chunks))
        ch = tuple(min(c, s) for c, s in zip(lead + tuple(chunks), shape))
        g = self.group
        make = g.create_array if hasattr(g, "create_array") else g.create_dataset
        arr = make(name, shape=shape, dtype=np.dtype(dtype), chunks=ch, overwrite=True)
        self.arrays[name] = arr
        return arr

    def write_whole(self, arrays: dict[str, np.ndarray], chunks: tuple[int, ...]) -> None:
        """Write in-memory results, one array each (None values are skipped)."""
        for name, value in arrays.items():
            if value is not None:
                self.create(name, value.shape, value.dtype, chunks)[...] = value

    def complete(self) -> None:
        """Mark the group as fully written."""
        self.group.attrs[COMPLETE_ATTR] = True
