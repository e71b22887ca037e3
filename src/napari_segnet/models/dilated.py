"""Dilated networks that keep resolution: ASPP (DeepLab v3), pyramid pooling (PSPNet) and the
Yu–Koltun context module.

Global pooling (ASPP's image-pooling branch, PSPNet's bins) would make every output
depend on the whole image, so no tile could reproduce the untiled result. Here both
pool over a sliding window of ``pool_size`` pixels instead: the receptive field stays
finite, tiling stays exact, and on images up to ``pool_size`` wide the branch sees
what global pooling would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError
from .base import SegNet
from .layers import ConvBlock, ConvNormAct, ReceptiveField, box_mean, conv_cls, interp_mode

OUTPUT_STRIDES = (1, 2, 4, 8, 16)


def default_rates(output_stride: int) -> tuple[int, ...]:
    """DeepLab v3's ASPP rates: 6/12/18 at output stride 16, 12/24/36 at 8 and finer."""
    return (6, 12, 18) if output_stride >= 16 else (12, 24, 36)


def _odd(n: float) -> int:
    n = max(1, round(n))
    return n if n % 2 else n + 1


class WindowPool(nn.Module):
    """Sliding-window average pooling followed by a 1×1 conv, norm and ReLU."""

    def __init__(self, dims: int, cin: int, cout: int, window: int, norm: str):
        super().__init__()
        self.window = window
        self.proj = ConvNormAct(dims, cin, cout, 1, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(box_mean(x, self.window))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, 3×3 at several rates, windowed image pooling."""

    def __init__(
        self, dims: int, cin: int, cout: int, rates, window: int, norm: str, dropout: float
    ):
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(dims, cin, cout, 1, 1, norm)])
        for r in rates:
            self.branches.append(ConvNormAct(dims, cin, cout, 3, int(r), norm))
        self.branches.append(WindowPool(dims, cin, cout, window, norm))
        self.project = ConvNormAct(dims, cout * len(self.branches), cout, 1, 1, norm)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.project(torch.cat([b(x) for b in self.branches], dim=1)))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling with sliding windows of ``window / bin`` features."""

    def __init__(self, dims: int, cin: int, cout: int, bins, window: int, norm: str):
        super().__init__()
        red = max(cin // len(bins), 1)
        self.levels = nn.ModuleList(
            [WindowPool(dims, cin, red, _odd(window / b), norm) for b in bins]
        )
        self.fuse = ConvNormAct(dims, cin + red * len(bins), cout, 3, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([x] + [lv(x) for lv in self.levels], dim=1))


CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)


class ContextModule(nn.Sequential):
    """Yu & Koltun's basic context module: 3×3 convs with exponentially growing dilation."""

    def __init__(self, dims: int, channels: int, norm: str):
        layers = [ConvNormAct(dims, channels, channels, 3, d, norm) for d in CONTEXT_DILATIONS]
        layers.append(conv_cls(dims)(channels, channels, 1))
        super().__init__(*layers)


class DilatedNet(SegNet):
    """A network that replaces stride and pooling by dilation beyond ``output_stride``.

    Parameters (through ``build_model("dilated", ...)``)
    ----------
    depth : int
        Number of stages after the stem; stage ``s`` would downsample by 2.
    width : int
        Stem channels, doubled per stage (capped at ``8 * width``).
    output_stride : int
        1, 2, 4, 8 (default) or 16: stages beyond it keep resolution with
        dilations 2, 4, 8, … instead of pooling.
    aspp : bool
        ASPP head (default True).
    rates : sequence of int or None
        ASPP dilation rates at the feature resolution (default: DeepLab v3's).
    pyramid : bool
        PSPNet pyramid pooling (bins ``bins``, default 1, 2, 3, 6).
    context : bool
        Yu–Koltun context module.
    pool_size : int
        Window (input pixels) of the image-pooling branch and of the pyramid's bin 1.
    norm, dropout
        As for the UNet.
    """

    def __init__(self, config: dict):
        super().__init__(config)
        dims, depth, width, norm = (
            self.dims,
            int(config["depth"]),
            int(config["width"]),
            config["norm"],
        )
        os_ = int(config["output_stride"])
        if os_ not in OUTPUT_STRIDES or os_ > 2**depth:
            raise ModelConfigError(
                f"output_stride must be one of {OUTPUT_STRIDES} and at most 2**depth"
            )
        rates = config["rates"] or default_rates(os_)
        bins = tuple(config["bins"])
        window = _odd(int(config["pool_size"]) / os_)
        self.output_stride = os_
        rf = ReceptiveField()
        self.stem = ConvBlock(dims, self.in_channels, width, norm=norm)
        rf.conv(3, n=2)
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        stages: list[nn.Module] = []
        cin, dil = width, 1
        for s in range(1, depth + 1):
            cout = min(width * 2**s, 8 * width)
            if 2**s <= os_:
                stages += [pool(2, stride=2), ConvBlock(dims, cin, cout, norm=norm)]
                rf.pool(2).conv(3, n=2)
            else:
                dil *= 2
                stages.append(ConvBlock(dims, cin, cout, norm=norm, dilation=dil))
                rf.conv(3, dilation=dil, n=2)
            cin = cout
        self.stages = nn.Sequential(*stages)
        head: list[nn.Module] = []
        if config["context"]:
            head.append(ContextModule(dims, cin, norm))
            for d in CONTEXT_DILATIONS:
                rf.conv(3, dilation=d)
        feat = 4 * width
        if config["pyramid"]:
            head.append(PyramidPooling(dims, cin, feat, bins, window, norm))
            rf.window(window)
            rf.conv(3)
            cin = feat
        if config["aspp"]:
            head.append(ASPP(dims, cin, feat, rates, window, norm, float(config["dropout"])))
            rf.radius += max(max(rates) * rf.jump, (window // 2) * rf.jump)
            cin = feat
        self.head = nn.Sequential(*head)
        self.classifier = conv_cls(dims)(cin, self.n_classes, 1)
        self.mode = interp_mode(dims)
        rf.up(os_, interpolate=os_ > 1)
        self._set_geometry(rf.radius, os_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        x = self.classifier(self.head(self.stages(self.stem(x))))
        if self.output_stride > 1:
            x = F.interpolate(x, size=size, mode=self.mode, align_corners=False)
        return x
