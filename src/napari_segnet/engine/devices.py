"""Choosing a torch device."""

from __future__ import annotations

import torch

from ..errors import SegNetError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def available_devices() -> list[str]:
    """Return the device names usable on this machine, best first.

    Returns
    -------
    list of str
        A subset of ``["cuda", "mps", "cpu"]``; ``"cpu"`` is always present.
    """
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"`` into a device.

    ``"auto"`` (or None) picks CUDA, then Apple MPS, then the CPU.

    Raises
    ------
    SegNetError
        If the named device is not available.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device(available_devices()[0])
    name = str(device).lower()
    kind = name.split(":")[0]
    if kind not in ("cuda", "mps", "cpu"):
        raise SegNetError(f"unknown device {device!r}; use one of {DEVICE_CHOICES}")
    if kind != "cpu" and kind not in available_devices():
        raise SegNetError(
            f"device {device!r} is not available here; available: {available_devices()}"
        )
    return torch.device(name)
