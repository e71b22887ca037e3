"""UNet (Ronneberger et al. 2015) in 2D and 3D with five kinds of upsampling."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelConfigError
from .base import SegNet
from .layers import (
    ConvBlock,
    ReceptiveField,
    bed_of_nails,
    conv_cls,
    convt_cls,
    interp_mode,
)

UPSAMPLING = ("transpose", "nearest", "bilinear", "bed_of_nails", "max_unpool")


def _pool(dims: int, indices: bool) -> nn.Module:
    cls = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    return cls(2, stride=2, return_indices=indices)


def _unpool(dims: int) -> nn.Module:
    return {2: nn.MaxUnpool2d, 3: nn.MaxUnpool3d}[dims](2, stride=2)


class Up(nn.Module):
    """Double the resolution and map ``cin`` to ``cout`` channels.

    ``transpose``: a learned 2×2 transposed convolution. ``nearest`` and
    ``bilinear`` (trilinear in 3D): interpolation, then a 3×3 convolution.
    ``bed_of_nails``: each value at the first position of its 2×2 block, zeros
    elsewhere, then a 3×3 convolution. ``max_unpool``: a 1×1 convolution to
    ``cout`` channels, then the encoder's max-pooling indices put each value back
    where its maximum came from, then a 3×3 convolution.
    """

    def __init__(self, dims: int, kind: str, cin: int, cout: int):
        super().__init__()
        self.kind = kind
        conv = conv_cls(dims)
        if kind == "transpose":
            self.op = convt_cls(dims)(cin, cout, 2, stride=2)
        elif kind in ("nearest", "bilinear"):
            mode = "nearest" if kind == "nearest" else interp_mode(dims)
            self.up = nn.Upsample(scale_factor=2, mode=mode)
            self.op = conv(cin, cout, 3, padding=1)
        elif kind == "bed_of_nails":
            self.op = conv(cin, cout, 3, padding=1)
        elif kind == "max_unpool":
            self.reduce = conv(cin, cout, 1)
            self.unpool = _unpool(dims)
            self.op = conv(cout, cout, 3, padding=1)
        else:
            raise ModelConfigError(f"unknown upsampling {kind!r}; use one of {UPSAMPLING}")

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "transpose":
            return self.op(x)
        if self.kind in ("nearest", "bilinear"):
            return self.op(self.up(x))
        if self.kind == "bed_of_nails":
            return self.op(bed_of_nails(x))
        return self.op(self.unpool(self.reduce(x), indices))

    @staticmethod
    def track(rf: ReceptiveField, kind: str) -> None:
        rf.up(2, interpolate=kind == "bilinear")
        if kind != "transpose":
            rf.conv(3)


class UNet(SegNet):
    """Encoder/decoder with skip connections that concatenate encoder features.

    Parameters (through ``build_model("unet", ...)``)
    ----------
    depth : int
        Number of 2× downsamplings (the input size must be a multiple of ``2**depth``).
    width : int
        Channels at the top level, doubled at each level below.
    upsampling : str
        One of ``"transpose"``, ``"nearest"``, ``"bilinear"``, ``"bed_of_nails"``,
        ``"max_unpool"``.
    norm : str
        ``"batch"`` (default), ``"group"`` or ``"none"``.
    dropout : float
        Dropout after the two deepest blocks.
    residual : bool
        Residual two-convolution blocks.
    """

    def __init__(self, config: dict):
        super().__init__(config)
        dims, depth, width = self.dims, int(config["depth"]), int(config["width"])
        norm, kind = config["norm"], config["upsampling"]
        drop, res = float(config["dropout"]), bool(config["residual"])
        if depth < 1:
            raise ModelConfigError("depth must be at least 1")
        if kind not in UPSAMPLING:
            raise ModelConfigError(f"unknown upsampling {kind!r}; use one of {UPSAMPLING}")
        chans = [width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        cin = self.in_channels
        for i in range(depth):
            self.enc.append(ConvBlock(dims, cin, chans[i], norm=norm, residual=res))
            cin = chans[i]
        self.pool = _pool(dims, indices=kind == "max_unpool")
        self.bottom = ConvBlock(dims, chans[-2], chans[-1], norm=norm, residual=res, dropout=drop)
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            self.ups.append(Up(dims, kind, chans[i + 1], chans[i]))
            d = drop if i == depth - 1 else 0.0
            self.dec.append(
                ConvBlock(dims, 2 * chans[i], chans[i], norm=norm, residual=res, dropout=d)
            )
        self.head = conv_cls(dims)(chans[0], self.n_classes, 1)
        self.unpool_indices = kind == "max_unpool"

        rf = ReceptiveField()
        for _ in range(depth):
            rf.conv(3, n=2).pool(2)
        rf.conv(3, n=2)
        for _ in range(depth):
            Up.track(rf, kind)
            rf.conv(3, n=2)
        self._set_geometry(rf.radius, 2**depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, idx = [], []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            if self.unpool_indices:
                x, i = self.pool(x)
                idx.append(i)
            else:
                x = self.pool(x)
        x = self.bottom(x)
        for up, block in zip(self.ups, self.dec):
            skip = skips.pop()
            x = up(x, idx.pop() if idx else None)
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
