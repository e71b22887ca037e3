"""Mask R-CNN: boxes first, then a mask per box (He et al., 2017), sized for microscopy.

A small residual backbone (random initialisation: it trains from scratch on a CPU)
feeds a feature pyramid; a region proposal network suggests boxes around anchors
whose sizes follow the expected object diameter; RoIAlign pools each box's features
for a box head (class score and refined box) and a mask head (a 28 x 28 mask).
Batch norm in eval mode keeps a tile's features independent of the rest of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegNet
from .detection_ops import box_iou, clip_boxes, crop_masks, decode, encode, nms, roi_align
from .rpn import RPN, anchor_sizes, match, sample

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
STRIDES = (4, 8, 16)
BOX_POOL, MASK_POOL = 7, 14
# Boxes per training image for the heads (half positive at most): fewer than the
# usual 512 since patches are small, and more positives than the usual quarter so
# each of the tens of objects in a patch is seen.
ROIS_PER_IMAGE = 128


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


class FPN(nn.Module):
    """Feature pyramid: lateral 1x1 convolutions, a top-down path, 3x3 smoothing."""

    def __init__(self, channels: list[int], out: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out, 1) for c in channels)
        self.smooth = nn.ModuleList(nn.Conv2d(out, out, 3, padding=1) for _ in channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.lateral[-1](feats[-1])
        outs = [self.smooth[-1](x)]
        for f, lat, sm in zip(feats[-2::-1], self.lateral[-2::-1], self.smooth[-2::-1]):
            x = lat(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
            outs.insert(0, sm(x))
        return outs


class BoxHead(nn.Module):
    """Two fully connected layers, then class logits and class-agnostic box deltas."""

    def __init__(self, channels: int, n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * BOX_POOL * BOX_POOL, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.cls = nn.Linear(hidden, n_classes)
        self.box = nn.Linear(hidden, 4)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.box.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x)
        return self.cls(h), self.box(h)


class MaskHead(nn.Module):
    """Four 3x3 convolutions, a 2x transposed convolution and one mask logit per pixel."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(4):
            cin = channels if i == 0 else hidden
            layers += [
                nn.Conv2d(cin, hidden, 3, padding=1, bias=False),
                nn.GroupNorm(min(8, hidden), hidden),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(hidden, hidden, 2, stride=2), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[:, 0]


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
    probabilities; ``forward(x, targets)`` in train mode returns the summed loss.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        width, fpn = int(config["width"]), int(config["fpn_width"])
        self.diameter = float(config["diameter"])
        self.backbone = Backbone(self.in_channels, width)
        self.fpn = FPN(self.backbone.channels, fpn)
        self.rpn = RPN(fpn, anchor_sizes(self.diameter, len(STRIDES)), list(STRIDES))
        self.box_head = BoxHead(fpn, self.n_classes)
        # Half the pyramid's channels: the mask head is most of a training step's cost.
        self.mask_head = MaskHead(fpn, max(fpn // 2, 1))
        # Tiles are cut at multiples of the coarsest stride; the halo is the overlap.
        self._set_geometry(self.max_diameter, STRIDES[-1] * 2)
        self.output_activation = "detections"

    @property
    def max_diameter(self) -> float:
        """Largest object expected (pixels); tiled inference overlaps tiles by this."""
        value = self.config.get("max_diameter")
        return float(value) if value else 4 * self.diameter

    def _levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """The pyramid level to pool each box from: the finest up to about 2.8 diameters.

        Small objects need the stride-4 map: at stride 8 a nucleus is a cell or two,
        too coarse to place a box or draw a mask.
        """
        size = torch.sqrt(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1))
        lvl = torch.round(torch.log2(size / (2 * self.diameter)))
        return lvl.clamp(0, len(STRIDES) - 1).long()

    def _pool(self, levels: list[torch.Tensor], boxes: list[torch.Tensor], size: int):
        """RoIAlign of every box from its pyramid level, in the order of ``boxes``."""
        flat = torch.cat(boxes)
        out = flat.new_zeros((flat.shape[0], levels[0].shape[1], size, size))
        which = self._levels(flat)
        image = torch.cat(
            [torch.full((len(b),), i, device=flat.device) for i, b in enumerate(boxes)]
        )
        for k, (f, stride) in enumerate(zip(levels, STRIDES)):
            sel = torch.nonzero(which == k).flatten()
            if sel.numel() == 0:
                continue
            per_image = [flat[sel[image[sel] == i]] for i in range(len(boxes))]
            order = torch.cat([sel[image[sel] == i] for i in range(len(boxes))])
            out[order] = roi_align(f, per_image, size, 1.0 / stride)
        return out

    def forward(self, x: torch.Tensor, targets: list[dict] | None = None):
        height, width = x.shape[-2:]
        levels = self.fpn(self.backbone(x))
        logits, deltas, anchors = self.rpn(levels)
        if targets is not None:
            return self._losses(levels, logits, deltas, anchors, (height, width), targets)
        return self._detect(levels, logits, deltas, anchors, (height, width))

    def _losses(self, levels, logits, deltas, anchors, size, targets) -> torch.Tensor:
        gt_boxes = [t["boxes"] for t in targets]
        gen = getattr(self, "sampling_generator", None)
        loss = RPN.loss(logits, deltas, anchors, gt_boxes, gen)
        parts = {"rpn": float(loss.detach())}
        proposals = RPN.proposals(logits, deltas, anchors, size, 300, 150)
        rois, cls_t, box_t, mask_rois, mask_t = [], [], [], [], []
        for props, t in zip(proposals, targets):
            boxes = torch.cat([props, t["boxes"]])
            labels, matched = match(box_iou(t["boxes"], boxes), 0.5, 0.5, allow_low=False)
            pos, neg = sample(labels, ROIS_PER_IMAGE, 0.5, gen)
            idx = torch.cat([pos, neg])
            rois.append(boxes[idx])
            cls = torch.zeros(len(idx), dtype=torch.long, device=boxes.device)
            if len(t["boxes"]):
                cls[: len(pos)] = t["classes"][matched[pos]]
                box_t.append(encode(t["boxes"][matched[pos]], boxes[pos], BOX_WEIGHTS))
                mask_rois.append(boxes[pos])
                mask_t.append(crop_masks(t["masks"][matched[pos]], boxes[pos], 28) >= 0.5)
            else:
                mask_rois.append(boxes[:0])
            cls_t.append(cls)
        cls_logits, box_deltas = self.box_head(self._pool(levels, rois, BOX_POOL))
        cls_all = torch.cat(cls_t)
        loss = loss + F.cross_entropy(cls_logits, cls_all)
        parts["cls"] = float(loss.detach()) - parts["rpn"]
        fg = torch.nonzero(cls_all > 0).flatten()
        if fg.numel():
            loss = loss + F.smooth_l1_loss(
                box_deltas[fg], torch.cat(box_t), beta=1 / 9, reduction="sum"
            ) / max(cls_all.numel(), 1)
            parts["box"] = float(loss.detach()) - parts["rpn"] - parts["cls"]
            mask_logits = self.mask_head(self._pool(levels, mask_rois, MASK_POOL))
            loss = loss + F.binary_cross_entropy_with_logits(mask_logits, torch.cat(mask_t).float())
        self.loss_parts = parts
        return loss

    def _detect(self, levels, logits, deltas, anchors, size) -> list[dict]:
        height, width = size
        # Enough proposals for densely packed objects: about four per object area.
        area = height * width / max(self.diameter**2, 1.0)
        post = int(min(4000, max(300, 4 * area)))
        proposals = RPN.proposals(logits, deltas, anchors, size, post, post)
        cls_logits, box_deltas = self.box_head(self._pool(levels, proposals, BOX_POOL))
        probs = F.softmax(cls_logits, dim=1)
        flat = torch.cat(proposals)
        boxes = clip_boxes(decode(box_deltas, flat, BOX_WEIGHTS), height, width)
        score, label = probs[:, 1:].max(dim=1)
        threshold = float(self.config.get("min_score", 0.05))
        nms_t = float(self.config["nms_threshold"])
        results, start = [], 0
        for props in proposals:
            sl = slice(start, start + len(props))
            start += len(props)
            b, s, lab = boxes[sl], score[sl], label[sl] + 1
            ok = (s >= threshold) & ((b[:, 2] - b[:, 0]) > 1) & ((b[:, 3] - b[:, 1]) > 1)
            b, s, lab = b[ok], s[ok], lab[ok]
            keep = nms(b, s, nms_t)
            results.append({"boxes": b[keep], "scores": s[keep], "labels": lab[keep]})
        if sum(len(r["boxes"]) for r in results):
            masks = torch.sigmoid(
                self.mask_head(self._pool(levels, [r["boxes"] for r in results], MASK_POOL))
            )
        else:
            masks = levels[0].new_zeros((0, 28, 28))
        start = 0
        for r in results:
            r["masks"] = masks[start : start + len(r["boxes"])]
            start += len(r["boxes"])
        return results
