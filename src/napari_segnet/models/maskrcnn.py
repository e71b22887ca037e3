"""Mask R-CNN: boxes first, then a mask per box (He et al., 2017), sized for microscopy.

The detector is torchvision's: its feature pyramid, region proposal network, anchor
generator, multi-scale RoIAlign, box head and mask head. What is ours is the small
residual backbone (random initialisation, since no pretrained weights can be
downloaded, and narrow enough to train on a CPU), the anchor sizes and pyramid levels
derived from the expected object diameter, and a transform that neither resizes nor
re-normalises (images arrive normalised as for every model, tiles at their own size).
Batch norm in eval mode keeps a tile's features independent of the rest of the batch.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegNet

STRIDES = (4, 8, 16)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
BOX_POOL, MASK_POOL = 7, 14
# Boxes per training image for the heads (half positive at most): fewer than the
# usual 512 since patches are small, and more positives than the usual quarter so
# each of the tens of objects in a patch is seen.
ROIS_PER_IMAGE = 128
# Proposals below this objectness are dropped before NMS at inference: every anchor
# is scored (no per-level top-k), so a tile and the whole image keep the same ones.
RPN_SCORE_THRESHOLD = 0.05
# Pixels of input that reach one output of the region proposal network at the
# coarsest level (backbone, pyramid and RPN head; measured by the gradient in the
# tests). Tiles overlap by at least this, so a kept object's features are those of
# the whole image.
CONTEXT_RADIUS = 104


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Backbone(nn.Module):
    """Residual stages at strides 4, 8 and 16 with ``width * 2**k`` channels."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(in_channels, width), _conv_bn(width, width, 2))
        chans = [width * 2, width * 4, width * 8]
        self.stages = nn.ModuleList()
        prev = width
        for c in chans:
            self.stages.append(nn.Sequential(_conv_bn(prev, c, 2), _Residual(c)))
            prev = c
        self.channels = chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class BackboneWithFPN(nn.Module):
    """The backbone's three stages through torchvision's feature pyramid network."""

    def __init__(self, in_channels: int, width: int, fpn_width: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = Backbone(in_channels, width)
        self.fpn = FeaturePyramidNetwork(self.body.channels, fpn_width)
        self.out_channels = fpn_width

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def anchor_sizes(diameter: float, n_levels: int = len(STRIDES)) -> tuple[tuple[int, ...], ...]:
    """One anchor size per pyramid level: the expected diameter, doubling per level.

    The finest level (stride 4) holds anchors of the typical object's size, so many
    anchors reach IoU 0.7 with it.
    """
    return tuple((max(round(diameter * 2**i), 2),) for i in range(n_levels))


def canonical_scale(diameter: float) -> int:
    """RoI size pooled from the stride-16 level's coarser neighbour (torchvision's level 4).

    torchvision picks level ``floor(4 + log2(sqrt(area) / scale))``; with this scale,
    boxes up to about 2.8 diameters pool from the stride-4 map (at stride 8 a nucleus
    is a cell or two, too coarse to place a box or draw a mask), up to 5.7 diameters
    from stride 8, larger ones from stride 16.
    """
    return max(round(4 * math.sqrt(2) * diameter), 8)


def _detector(config: dict[str, Any], in_channels: int, n_classes: int) -> nn.Module:
    """torchvision's Mask R-CNN on our backbone, anchors and pyramid levels."""
    from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.models.detection.transform import GeneralizedRCNNTransform
    from torchvision.ops import MultiScaleRoIAlign

    class Transform(GeneralizedRCNNTransform):
        """Batches tiles as they are: no resizing, and masks left at 28 x 28.

        Images are normalised before they get here, as for every napari-segnet model;
        tiled inference pastes each mask into its box itself (a full-image mask per
        object would cost gigabytes on a dense tile).
        """

        def resize(self, image, target=None):
            return image, target

        def postprocess(self, result, image_shapes, original_image_sizes):
            return result

    diameter = float(config["diameter"])
    fpn = int(config["fpn_width"])
    backbone = BackboneWithFPN(in_channels, int(config["width"]), fpn)
    names = [str(i) for i in range(len(STRIDES))]
    scale = canonical_scale(diameter)
    box_pool = MultiScaleRoIAlign(names, BOX_POOL, 2, canonical_scale=scale, canonical_level=4)
    mask_pool = MultiScaleRoIAlign(names, MASK_POOL, 2, canonical_scale=scale, canonical_level=4)
    hidden = 256
    # Half the pyramid's channels: the mask head is most of a training step's cost.
    mask_width = max(fpn // 2, 1)
    net = TorchvisionMaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(
            anchor_sizes(diameter), (ASPECT_RATIOS,) * len(STRIDES)
        ),
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(fpn * BOX_POOL * BOX_POOL, hidden),
        box_predictor=FastRCNNPredictor(hidden, n_classes),
        box_batch_size_per_image=ROIS_PER_IMAGE,
        box_positive_fraction=0.5,
        box_score_thresh=float(config.get("min_score", 0.05)),
        box_nms_thresh=float(config["nms_threshold"]),
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(
            fpn,
            (mask_width,) * 4,
            1,
            norm_layer=lambda c: nn.GroupNorm(min(8, c), c),
        ),
        mask_predictor=MaskRCNNPredictor(mask_width, mask_width, n_classes),
    )
    net.transform = Transform(
        min_size=1,
        max_size=1,
        image_mean=[0.0] * in_channels,
        image_std=[1.0] * in_channels,
        size_divisible=STRIDES[-1],
    )
    return net


class MaskRCNN(SegNet):
    """Mask R-CNN for 2D images; ``build_model("maskrcnn", ...)`` makes one.

    Options (``config``): ``width`` (backbone channels at full resolution, doubled per
    stage), ``fpn_width`` (pyramid and head channels), ``diameter`` (expected object
    diameter in pixels: anchors of one to four times it), ``max_diameter``
    (largest object expected, pixels; the tile overlap of tiled inference, default
    four diameters), ``score_threshold`` and ``nms_threshold`` (defaults of
    :func:`~napari_segnet.engine.detect.detect`).

    ``forward(x)`` in eval mode returns per image a dict of ``boxes`` ``(K, 4)``
    (x0, y0, x1, y1), ``scores``, ``labels`` and ``masks`` ``(K, 28, 28)``
    probabilities; ``forward(x, targets)`` in train mode returns the summed loss
    (its parts in ``loss_parts``). A target holds ``boxes``, ``masks`` ``(N, H, W)``
    and ``classes``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.diameter = float(config["diameter"])
        self.detector = _detector(config, self.in_channels, self.n_classes)
        # Tiles are cut at multiples of the coarsest stride; the halo is the overlap.
        self._set_geometry(self.tile_overlap, STRIDES[-1] * 2)
        self.output_activation = "detections"
        self.loss_parts: dict[str, float] = {}

    @property
    def max_diameter(self) -> float:
        """Largest object expected (pixels); tiled inference overlaps tiles by this."""
        value = self.config.get("max_diameter")
        return float(value) if value else 4 * self.diameter

    @property
    def tile_overlap(self) -> float:
        """Context tiled inference adds on each side of a tile core (pixels).

        At least the largest object, so an object cut by a core edge is whole in the
        tile that keeps it, and at least the network's receptive radius, so what the
        tile computes for it is what the whole image gives.
        """
        return max(self.max_diameter, float(CONTEXT_RADIUS))

    def _limits(self, height: int, width: int) -> None:
        """Proposal and detection counts for a tile of this size.

        Every anchor above :data:`RPN_SCORE_THRESHOLD` enters NMS, and the caps
        after it scale with the number of objects the tile can hold (about four
        proposals per object area), so they do not bind on densely packed nuclei.
        """
        objects = height * width / max(self.diameter**2, 1.0)
        rpn, heads = self.detector.rpn, self.detector.roi_heads
        rpn._pre_nms_top_n["testing"] = 10**9
        rpn._post_nms_top_n["testing"] = int(max(300, 4 * objects))
        heads.detections_per_img = int(max(100, 2 * objects))
        # Training patches: fewer proposals than torchvision's 2000 (chosen on held-out
        # synthetic nuclei: AP@0.5 0.72 -> 0.78 after 300 steps), so the sampled
        # boxes hold more of the hard ones near objects.
        rpn._post_nms_top_n["training"] = int(max(300, 2 * objects))
        rpn._pre_nms_top_n["training"] = 2 * rpn._post_nms_top_n["training"]
        heads.nms_thresh = float(self.config["nms_threshold"])
        heads.score_thresh = float(self.config.get("min_score", 0.05))
        rpn.score_thresh = 0.0 if self.training else RPN_SCORE_THRESHOLD

    def forward(self, x: torch.Tensor, targets: list[dict] | None = None):
        height, width = x.shape[-2:]
        self._limits(height, width)
        images = list(x)
        if targets is not None:
            tv = [
                {"boxes": t["boxes"], "labels": t["classes"], "masks": t["masks"].to(torch.uint8)}
                for t in targets
            ]
            losses = self.detector(images, tv)
            self.loss_parts = {k: float(v.detach()) for k, v in losses.items()}
            return sum(losses.values())
        results = self.detector(images)
        for r in results:
            r["masks"] = r["masks"][:, 0]
        return results
