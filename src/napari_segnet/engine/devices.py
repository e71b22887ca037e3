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
        If the device is not a name or ``torch.device``, is unknown, or is not
        available here (also for a ``torch.device("cuda")`` without CUDA).
    """
    if device is None or device == "auto":
        return torch.device(available_devices()[0])
    if not isinstance(device, (str, torch.device)):
        raise SegNetError(
            f"device must be one of {DEVICE_CHOICES} (or e.g. 'cuda:1'), not {device!r}"
        )
    try:
        dev = torch.device(device.lower() if isinstance(device, str) else device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cuda", "mps", "cpu"):
        raise SegNetError(f"unknown device {device!r}; use one of {DEVICE_CHOICES}")
    if dev.type != "cpu" and dev.type not in available_devices():
        raise SegNetError(
            f"device {str(device)!r} is not available here; available: {available_devices()}"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SegNetError(
            f"device {str(device)!r} is not available here: "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return dev
