"""Dimension-generic building blocks shared by the architectures."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError

NORMS = ("batch", "group", "none")


def conv_cls(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def convt_cls(dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]


def interp_mode(dims: int) -> str:
    return {2: "bilinear", 3: "trilinear"}[dims]


class RunningGroupNorm(nn.Module):
    """Group normalisation that keeps running statistics for inference.

    Training normalises each sample by its own group statistics, like
    :class:`torch.nn.GroupNorm`, so small batches train well. In eval mode the
    running averages of those statistics are used instead, which makes the layer
    pointwise: a tile then gets exactly the same result as the whole image (plain
    GroupNorm would normalise by per-tile statistics and leave seams).
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.groups = groups
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(groups))
        self.register_buffer("running_var", torch.ones(groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        g = self.groups
        if self.training:
            with torch.no_grad():
                xg = x.detach().float().reshape(n, g, -1)
                mean = xg.mean(dim=(0, 2))
                var = xg.var(dim=2, unbiased=False).mean(dim=0)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
            return F.group_norm(x, g, self.weight, self.bias, self.eps)
        shape = (1, c) + (1,) * (x.ndim - 2)
        per_c = c // g
        mean = self.running_mean.repeat_interleave(per_c).reshape(shape)
        var = self.running_var.repeat_interleave(per_c).reshape(shape)
        scale = self.weight.reshape(shape) / torch.sqrt(var + self.eps)
        return (x - mean.to(x.dtype)) * scale.to(x.dtype) + self.bias.reshape(shape).to(x.dtype)


def norm_layer(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if kind == "group":
        groups = math.gcd(channels, 8)
        return RunningGroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ModelConfigError(f"unknown norm {kind!r}; use one of {NORMS}")


class ConvNormAct(nn.Sequential):
    """Convolution (same padding), normalisation, ReLU."""

    def __init__(
        self, dims: int, cin: int, cout: int, k: int = 3, dilation: int = 1, norm: str = "batch"
    ):
        pad = dilation * (k // 2)
        super().__init__(
            conv_cls(dims)(cin, cout, k, padding=pad, dilation=dilation, bias=norm == "none"),
            norm_layer(norm, dims, cout),
            nn.ReLU(inplace=True),
        )


class ConvBlock(nn.Module):
    """Two 3×3 convolutions, optionally residual, optionally followed by dropout."""

    def __init__(
        self,
        dims: int,
        cin: int,
        cout: int,
        *,
        norm: str = "batch",
        dilation: int = 1,
        residual: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.c1 = ConvNormAct(dims, cin, cout, 3, dilation, norm)
        self.c2 = ConvNormAct(dims, cout, cout, 3, dilation, norm)
        self.residual = residual
        if residual:
            self.skip = nn.Identity() if cin == cout else conv_cls(dims)(cin, cout, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c2(self.c1(x))
        if self.residual:
            y = y + self.skip(x)
        return self.drop(y)


def bed_of_nails(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsample by placing each value at the first position of its block, zeros elsewhere."""
    dims = x.ndim - 2
    shape = x.shape[:2] + tuple(s * factor for s in x.shape[2:])
    out = x.new_zeros(shape)
    out[(slice(None), slice(None)) + (slice(None, None, factor),) * dims] = x
    return out


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a sliding cube of odd ``size`` (stride 1), counting only pixels inside.

    Separable along each axis (exact, because the inside part of a window is always
    a box). Each output reads only its own window, so what lies farther away cannot
    change it, not even by rounding: tiles reproduce the whole image bit for bit.
    """
    if size <= 1:
        return x
    r = size // 2
    dims = x.ndim - 2
    pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    for ax in range(dims):
        k = [1] * dims
        k[ax] = size
        pad = [0] * (2 * dims)
        # F.pad lists the last axis first.
        pad[2 * (dims - 1 - ax)] = pad[2 * (dims - 1 - ax) + 1] = r
        total = pool(F.pad(x, pad), tuple(k), stride=1)
        ones = torch.ones((1, 1, x.shape[2 + ax]), dtype=x.dtype, device=x.device)
        count = F.avg_pool1d(F.pad(ones, (r, r)), size, stride=1)
        shape = [1] * x.ndim
        shape[2 + ax] = -1
        x = total / count.reshape(shape)
    return x


class ReceptiveField:
    """Track the receptive-field radius (input pixels) along a path through a network.

    ``jump`` is the distance in input pixels between neighbouring positions of the
    current feature map. Each operation adds the farthest input offset it can
    reach; the sum bounds how far any input can influence an output.
    """

    def __init__(self) -> None:
        self.radius = 0.0
        self.jump = 1.0

    def conv(self, k: int = 3, dilation: int = 1, n: int = 1) -> ReceptiveField:
        self.radius += n * (k // 2) * dilation * self.jump
        return self

    def pool(self, factor: int = 2) -> ReceptiveField:
        self.radius += (factor - 1) * self.jump
        self.jump *= factor
        return self

    def up(self, factor: int = 2, interpolate: bool = False) -> ReceptiveField:
        if interpolate:
            self.radius += self.jump  # linear interpolation reads the next coarse neighbour
        self.jump /= factor
        return self

    def window(self, size: int) -> ReceptiveField:
        self.radius += (size // 2) * self.jump
        return self
