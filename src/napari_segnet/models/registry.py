"""The architecture registry and ``build_model``."""

from __future__ import annotations

from typing import Any

from .base import SegNet
from .deconvnet import DeConvNet
from .dilated import DilatedNet
from .layers import NORMS
from .unet import UPSAMPLING, UNet

# Each architecture: its class and the defaults of every option it takes.
ARCHITECTURES: dict[str, tuple[type[SegNet], dict[str, Any]]] = {
    "unet": (
        UNet,
        {
            "depth": 4,
            "width": 32,
            "upsampling": "transpose",
            "norm": "batch",
            "dropout": 0.0,
            "residual": False,
        },
    ),
    "deconvnet": (DeConvNet, {"depth": 4, "width": 32, "norm": "batch", "dropout": 0.0}),
    "dilated": (
        DilatedNet,
        {
            "depth": 4,
            "width": 32,
            "output_stride": 8,
            "aspp": True,
            "rates": None,
            "pyramid": False,
            "bins": [1, 2, 3, 6],
            "context": False,
            "pool_size": 128,
            "norm": "batch",
            "dropout": 0.0,
        },
    ),
}


def architectures() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(ARCHITECTURES)


def _check(arch: str, dims: int, in_channels: int, n_classes: int, opts: dict[str, Any]) -> None:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, not {dims!r}")
    if int(in_channels) < 1:
        raise ValueError("in_channels must be at least 1")
    if int(n_classes) < 2:
        raise ValueError("n_classes must be at least 2 (background and one class)")
    if "norm" in opts and opts["norm"] not in NORMS:
        raise ValueError(f"unknown norm {opts['norm']!r}; use one of {NORMS}")
    if "upsampling" in opts and opts["upsampling"] not in UPSAMPLING:
        raise ValueError(f"unknown upsampling {opts['upsampling']!r}; use one of {UPSAMPLING}")
    if "width" in opts and int(opts["width"]) < 1:
        raise ValueError("width must be at least 1")
    if not 0.0 <= float(opts.get("dropout", 0.0)) < 1.0:
        raise ValueError("dropout must be in [0, 1)")


def build_model(
    arch: str = "unet",
    *,
    dims: int = 2,
    in_channels: int = 1,
    n_classes: int = 2,
    **options: Any,
) -> SegNet:
    """Build a network from the registry.

    Parameters
    ----------
    arch : str
        ``"unet"``, ``"deconvnet"`` or ``"dilated"``.
    dims : int
        2 for images, 3 for volumes.
    in_channels : int
        Image channels the network takes.
    n_classes : int
        Output classes (background included).
    **options
        Architecture options; see each class's docstring. Unknown names are an error.

    Returns
    -------
    SegNet
        A ``torch.nn.Module`` with ``config``, ``halo``, ``divisor`` and ``meta``.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; use one of {architectures()}")
    cls, defaults = ARCHITECTURES[arch]
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {arch!r}; it takes {sorted(defaults)}"
        )
    opts = {**defaults, **options}
    for k in ("rates", "bins"):
        if opts.get(k) is not None and k in opts:
            opts[k] = [int(v) for v in opts[k]]
    _check(arch, int(dims), in_channels, n_classes, opts)
    config = {
        "arch": arch,
        "dims": int(dims),
        "in_channels": int(in_channels),
        "n_classes": int(n_classes),
        **opts,
    }
    return cls(config)


def build_from_config(config: dict[str, Any]) -> SegNet:
    """Rebuild a model from its ``config`` dict."""
    cfg = dict(config)
    arch = cfg.pop("arch")
    return build_model(arch, **cfg)
