"""A network from a bioimage.io package, shaped for the overlap-tile engine."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegNet

Op = Callable[[torch.Tensor], torch.Tensor]


class PackageNet(SegNet):
    """A foreign network behind the engine's ``(B, C, *spatial)`` interface.

    The engine normalises tiles (``meta["normalization"]``, from the package's first
    preprocessing step); this module applies the package's remaining preprocessing,
    puts the axes in the package's order, runs the network, puts the output axes back
    and applies the package's postprocessing. Its output is final
    (``output_activation = "none"``): the engine does not add a softmax.

    Parameters
    ----------
    net : torch.nn.Module
        The package's network (TorchScript or built from its architecture).
    config : dict
        ``dims``, ``in_channels``, ``n_classes`` and where the package came from.
    in_axes, out_axes : sequence of str
        The package's axis ids, e.g. ``("batch", "channel", "y", "x")``.
    pre, post : sequence of callables
        Tensor operations in the package's axis order (pre) and in ``(B, C, ...)`` (post).
    minimum, step : int
        The package's input size grid ``minimum + n * step``; smaller or off-grid inputs
        are padded with zeros at the far end and the output cropped back.
    halo : int
        Pixels of context per side a tile needs (rounded up to ``step``).
    """

    def __init__(
        self,
        net: nn.Module,
        config: dict[str, Any],
        *,
        in_axes: Sequence[str],
        out_axes: Sequence[str],
        pre: Sequence[Op] = (),
        post: Sequence[Op] = (),
        minimum: int = 1,
        step: int = 1,
        halo: int = 0,
    ):
        super().__init__(config)
        self.net = net
        self.in_axes, self.out_axes = tuple(in_axes), tuple(out_axes)
        self.pre, self.post = list(pre), list(post)
        self.minimum = self.min_size = int(minimum)
        self._set_geometry(halo, step)
        self.output_activation = "none"

    def _valid(self, n: int) -> int:
        """The smallest size on the package's grid that holds ``n`` pixels."""
        if n <= self.minimum:
            return self.minimum
        return self.minimum + math.ceil((n - self.minimum) / self.divisor) * self.divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        valid = tuple(self._valid(n) for n in spatial)
        if valid != spatial:
            pad = [p for n, v in zip(reversed(spatial), reversed(valid)) for p in (0, v - n)]
            x = F.pad(x, pad)
        x = to_axes(x, self.in_axes)
        for op in self.pre:
            x = op(x)
        y = self.net(x)
        if isinstance(y, (tuple, list)):
            y = y[0]
        y = from_axes(y.float(), self.out_axes)
        for op in self.post:
            y = op(y)
        return y[(slice(None), slice(None), *(slice(0, n) for n in spatial))]


def _spatial_ids(axes: Sequence[str]) -> list[str]:
    return [a for a in axes if a in ("z", "y", "x")]


def to_axes(x: torch.Tensor, axes: Sequence[str]) -> torch.Tensor:
    """``(B, C, *spatial)`` to the package's axis order (absent batch/channel dropped)."""
    order = ["batch", "channel", *_spatial_ids(axes)]
    if "channel" not in axes:
        x, order = x[:, 0], [a for a in order if a != "channel"]
    if "batch" not in axes:
        x, order = x[0], [a for a in order if a != "batch"]
    return x.permute(*(order.index(a) for a in axes))


def from_axes(y: torch.Tensor, axes: Sequence[str]) -> torch.Tensor:
    """The package's output axis order back to ``(B, C, *spatial)``."""
    axes = list(axes)
    for missing in ("batch", "channel"):
        if missing not in axes:
            y, axes = y[None], [missing, *axes]
    return y.permute(*(axes.index(a) for a in ["batch", "channel", *_spatial_ids(axes)]))


def receptive_radius(
    module: nn.Module, channels: int, dims: int, size: int, step: int, by: str = "gradient"
) -> int:
    """The receptive-field radius of ``module`` measured by back-propagation.

    The gradient of the output summed over a centre block of ``step`` pixels per axis
    (every phase of the network's downsampling) with respect to a random input is
    non-zero exactly where the input can change that block; the radius is how far
    that region reaches beyond the block. ``size`` (a valid input size) should exceed
    twice the radius; the caller grows it while the field reaches the border.

    ``by="perturbation"`` is for modules without gradients (onnxruntime): the outputs
    that change when the centre block of the input changes; for convolutions the same
    reach, seen from the other side.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, channels) + (size,) * dims, generator=gen)
    lo = size // 2 // step * step
    block = (slice(None), slice(None), *(slice(lo, lo + step),) * dims)
    if by == "perturbation":
        with torch.no_grad():
            moved = x.clone()
            moved[block] += 1.0 + torch.rand(moved[block].shape, generator=gen)
            changed = (module(moved) - module(x)).abs().sum(dim=(0, 1)) > 0
        hit = changed.nonzero()
    else:
        x.requires_grad_(True)
        with torch.enable_grad():
            module(x)[block].sum().backward()
        hit = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    if len(hit) == 0:
        return 0
    return int(max((lo - hit).max(), (hit - (lo + step - 1)).max(), 0))
