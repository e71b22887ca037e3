"""The architecture registry and ``build_model``."""

from __future__ import annotations

from typing import Any

from ..errors import ModelConfigError
from .base import SegNet
from .deconvnet import DeConvNet
from .dilated import OUTPUT_STRIDES, DilatedNet
from .layers import NORMS
from .maskrcnn import MaskRCNN
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
    "maskrcnn": (
        MaskRCNN,
        {
            "width": 16,
            "fpn_width": 32,
            "diameter": 16.0,
            "max_diameter": None,
            # Chosen on held-out synthetic nuclei: a box IoU of 0.3 already marks
            # a duplicate of a compact object (boxes of touching nuclei overlap less).
            "score_threshold": 0.6,
            "nms_threshold": 0.3,
        },
    ),
}


def architectures() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(ARCHITECTURES)


def _check(arch: str, dims: int, in_channels: int, n_classes: int, opts: dict[str, Any]) -> None:
    """Raise a :class:`ModelConfigError` that says what to change for a bad option."""
    if dims not in (2, 3):
        raise ModelConfigError(f"dims must be 2 (images) or 3 (volumes), not {dims!r}")
    if int(in_channels) < 1:
        raise ModelConfigError(
            f"in_channels must be at least 1, not {in_channels!r}: give the image's channels"
        )
    if int(n_classes) < 2:
        raise ModelConfigError(
            f"n_classes must be at least 2 (background and one class), not {n_classes!r}"
        )
    if "norm" in opts and opts["norm"] not in NORMS:
        raise ModelConfigError(f"unknown norm {opts['norm']!r}; use one of {NORMS}")
    if "upsampling" in opts and opts["upsampling"] not in UPSAMPLING:
        raise ModelConfigError(
            f"unknown upsampling {opts['upsampling']!r}; use one of {UPSAMPLING}"
        )
    if "width" in opts and int(opts["width"]) < 1:
        raise ModelConfigError(f"width must be at least 1, not {opts['width']!r}")
    if arch == "unet" and int(opts["depth"]) < 1:
        raise ModelConfigError(f"depth must be at least 1, not {opts['depth']!r}")
    if arch == "dilated":
        stride, depth = int(opts["output_stride"]), int(opts["depth"])
        if stride not in OUTPUT_STRIDES or stride > 2**depth:
            allowed = [s for s in OUTPUT_STRIDES if s <= 2**depth]
            raise ModelConfigError(
                f"output_stride {stride} does not fit; with depth {depth} use one of {allowed}"
            )
    if arch == "maskrcnn":
        _check_maskrcnn(dims, n_classes, opts)
    if not 0.0 <= float(opts.get("dropout", 0.0)) < 1.0:
        raise ModelConfigError(
            f"dropout must be in [0, 1), not {opts.get('dropout')!r}: 0 turns it off"
        )


def _check_maskrcnn(dims: int, n_classes: int, opts: dict[str, Any]) -> None:
    if dims != 2:
        raise ModelConfigError(
            f"maskrcnn is a 2D detector, dims must be 2, not {dims!r}: segment volumes "
            "slice by slice, or use a 3D 'unet' for instances"
        )
    if int(opts["fpn_width"]) < 1:
        raise ModelConfigError(f"fpn_width must be at least 1, not {opts['fpn_width']!r}")
    diameter = opts["diameter"]
    if not isinstance(diameter, (int, float)) or not 2 <= float(diameter) <= 1024:
        raise ModelConfigError(f"diameter must be a number from 2 to 1024 pixels, not {diameter!r}")
    largest = opts["max_diameter"]
    if largest is not None and (
        not isinstance(largest, (int, float)) or not float(diameter) <= float(largest) <= 4096
    ):
        raise ModelConfigError(
            f"max_diameter must be None or a number from diameter ({diameter}) to 4096, "
            f"not {largest!r}"
        )
    for key in ("score_threshold", "nms_threshold"):
        if not isinstance(opts[key], (int, float)) or not 0.0 < float(opts[key]) < 1.0:
            raise ModelConfigError(f"{key} must be a number in (0, 1), not {opts[key]!r}")


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
        ``"unet"``, ``"deconvnet"``, ``"dilated"`` or ``"maskrcnn"`` (2D instance
        detection: boxes, then a mask per box; ``n_classes`` counts background).
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

    Raises
    ------
    ModelConfigError
        Unknown architecture or option, or an option out of range (a ``ValueError``).
    """
    if arch not in ARCHITECTURES:
        raise ModelConfigError(f"unknown architecture {arch!r}; use one of {architectures()}")
    cls, defaults = ARCHITECTURES[arch]
    unknown = set(options) - set(defaults)
    if unknown:
        raise ModelConfigError(
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
    if "arch" not in cfg:
        raise ModelConfigError(
            f"a model config needs an 'arch' entry; use one of {architectures()}"
        )
    arch = cfg.pop("arch")
    return build_model(arch, **cfg)
