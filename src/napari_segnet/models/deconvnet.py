"""DeConvNet (Noh et al. 2015): a symmetric encoder/decoder that unpools with pooling indices."""

from __future__ import annotations

import torch
from torch import nn

from .base import SegNet
from .layers import ConvBlock, ReceptiveField, conv_cls


class DeConvNet(SegNet):
    """Encoder of conv blocks and max-pooling; decoder of max-unpooling and conv blocks.

    No skip connections: the decoder recovers *where* only through the pooling
    indices the encoder recorded, which put each value back at the position of
    its maximum.

    Parameters (through ``build_model("deconvnet", ...)``)
    ----------
    depth : int
        Number of pooling/unpooling stages.
    width : int
        Channels at the top level, doubled per stage (capped at ``8 * width``).
    norm : str
        ``"batch"``, ``"group"`` or ``"none"``.
    dropout : float
        Dropout in the deepest block.
    """

    def __init__(self, config: dict):
        super().__init__(config)
        dims, depth, width, norm = (
            self.dims,
            int(config["depth"]),
            int(config["width"]),
            config["norm"],
        )
        drop = float(config["dropout"])
        chans = [min(width * 2**i, 8 * width) for i in range(depth + 1)]
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        unpool = {2: nn.MaxUnpool2d, 3: nn.MaxUnpool3d}[dims]
        self.enc = nn.ModuleList()
        cin = self.in_channels
        for i in range(depth):
            self.enc.append(ConvBlock(dims, cin, chans[i + 1] if i else chans[0], norm=norm))
            cin = chans[i + 1] if i else chans[0]
        self.enc_out = [chans[i + 1] if i else chans[0] for i in range(depth)]
        self.pool = pool(2, stride=2, return_indices=True)
        self.unpool = unpool(2, stride=2)
        self.middle = ConvBlock(dims, cin, cin, norm=norm, dropout=drop)
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            cout = self.enc_out[i - 1] if i else chans[0]
            self.dec.append(ConvBlock(dims, self.enc_out[i], cout, norm=norm))
        self.head = conv_cls(dims)(chans[0], self.n_classes, 1)

        rf = ReceptiveField()
        for _ in range(depth):
            rf.conv(3, n=2).pool(2)
        rf.conv(3, n=2)
        for _ in range(depth):
            rf.up(2).conv(3, n=2)
        self._set_geometry(rf.radius, 2**depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = []
        for block in self.enc:
            x, i = self.pool(block(x))
            idx.append(i)
        x = self.middle(x)
        for block in self.dec:
            x = block(self.unpool(x, idx.pop()))
        return self.head(x)
