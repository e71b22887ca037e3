"""Memory for large temporary arrays on the CPU or a GPU.

On the CPU, torch maps fresh memory for each large array and the kernel then faults
it in page by page (4 kB at a time), which can cost as much as the arithmetic on it.
numpy asks Linux for transparent huge pages for large arrays (2 MB per fault), so
CPU tensors made from numpy arrays fill several times faster.
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY = {
    torch.float32: np.float32,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}


def empty(shape, dtype: torch.dtype = torch.float32, device="cpu") -> torch.Tensor:
    """An uninitialised tensor of ``shape`` (numpy-backed on the CPU)."""
    device = torch.device(device)
    if device.type == "cpu" and dtype in _NUMPY:
        return torch.from_numpy(np.empty(shape, dtype=_NUMPY[dtype]))
    return torch.empty(shape, dtype=dtype, device=device)


class Buffers:
    """Named flat buffers for work done piece by piece: each piece gets views of the
    size it asks for in the same memory, so only the first piece pays for it."""

    def __init__(self, device):
        self.device = torch.device(device)
        self._store: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
        numel = int(np.prod(shape))
        buf = self._store.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = empty((numel,), dtype, self.device)
            self._store[name] = buf
        return buf[:numel].view(shape)
