"""The common base of all napari-segnet networks."""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import nn

from ..options import ModelMeta


def default_meta(n_classes: int) -> dict[str, Any]:
    """Training metadata of a fresh, untrained model."""
    return ModelMeta.default(n_classes).to_dict()


class SegNet(nn.Module):
    """Base class: a segmentation network that knows how to be tiled.

    Attributes
    ----------
    config : dict
        JSON-able architecture description; ``build_model(**config)`` rebuilds it.
    halo : int
        Margin (pixels, per side) a tile needs so its centre equals the untiled
        result; the receptive-field radius rounded up to a multiple of ``divisor``.
    divisor : int
        Every spatial input size must be a multiple of this.
    receptive_radius : int
        The receptive-field radius itself, in input pixels.
    meta : dict
        Training metadata: class names, target kind, normalisation, object diameter.
    history : dict
        Per-epoch training curves (empty for an untrained model).
    source : str or None
        Where the model was loaded from: a bundled model's name or a file path.
    """

    dims: int
    in_channels: int
    n_classes: int

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.dims = int(config["dims"])
        self.in_channels = int(config["in_channels"])
        self.n_classes = int(config["n_classes"])
        self.meta: dict[str, Any] = default_meta(self.n_classes)
        self.history: dict[str, Any] = {}
        self.source: str | None = None
        self.divisor = 1
        self.receptive_radius = 0
        self.halo = 0
        # Smallest input the network takes per axis (bioimage.io packages may ask for one).
        self.min_size = 1
        # "softmax": forward gives class scores; "none": it gives final probabilities.
        self.output_activation = "softmax"

    def _set_geometry(self, radius: float, divisor: int) -> None:
        self.divisor = int(divisor)
        self.receptive_radius = math.ceil(radius)
        self.halo = int(math.ceil(self.receptive_radius / self.divisor) * self.divisor)

    @property
    def metadata(self) -> ModelMeta:
        """``meta`` read as typed settings (a fresh, read-only view)."""
        return ModelMeta.from_dict(self.meta)

    @property
    def arch(self) -> str:
        return str(self.config["arch"])

    def extra_repr(self) -> str:
        return f"halo={self.halo}, divisor={self.divisor}"
