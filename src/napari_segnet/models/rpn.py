"""The region proposal network of Mask R-CNN: anchors, proposals and their losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .detection_ops import box_iou, clip_boxes, decode, encode, nms

RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ASPECT_RATIOS = (0.5, 1.0, 2.0)


def anchor_sizes(diameter: float, n_levels: int) -> list[float]:
    """One anchor size per pyramid level: the expected diameter, doubling per level.

    The finest level (stride 4) holds anchors of the typical object's size, so many
    anchors reach IoU 0.7 with it; smaller objects still get their best anchors as
    positives (``match(..., allow_low=True)``).
    """
    return [diameter * 2**i for i in range(n_levels)]


def level_anchors(size: float, stride: int, height: int, width: int, device) -> torch.Tensor:
    """``(height * width * A, 4)`` anchors centred on a level's cells, A per cell."""
    shapes = []
    for r in ASPECT_RATIOS:
        # r = height / width at constant area size**2
        w, h = size / r**0.5, size * r**0.5
        shapes.append([-w / 2, -h / 2, w / 2, h / 2])
    base = torch.tensor(shapes, dtype=torch.float32, device=device)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + base[None]).reshape(-1, 4)


def match(iou: torch.Tensor, high: float, low: float, allow_low: bool) -> tuple:
    """Label candidates against ground truth from a ``(G, N)`` IoU matrix.

    Returns
    -------
    labels : torch.Tensor
        Per candidate: 1 (IoU >= ``high``), 0 (< ``low``), -1 (in between: ignored).
    matched : torch.Tensor
        Per candidate, the index of its best ground-truth box.
    """
    n = iou.shape[1]
    if iou.shape[0] == 0:
        return torch.zeros(n, device=iou.device), torch.zeros(
            n, dtype=torch.long, device=iou.device
        )
    best, matched = iou.max(dim=0)
    labels = torch.full((n,), -1.0, device=iou.device)
    labels[best < low] = 0
    labels[best >= high] = 1
    if allow_low:
        # Each object's best candidates are positive even below ``high``, so no object
        # is left without a proposal (small objects next to coarse anchors).
        top = iou.max(dim=1, keepdim=True).values
        gt_idx, cand = torch.nonzero((iou == top) & (top > 0), as_tuple=True)
        labels[cand] = 1
        matched[cand] = gt_idx
    return labels, matched


def sample(labels: torch.Tensor, count: int, positive_fraction: float, gen=None) -> tuple:
    """Random positive and negative indices, at most ``count`` with the given share."""
    pos = torch.nonzero(labels == 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    n_pos = min(pos.numel(), int(count * positive_fraction))
    n_neg = min(neg.numel(), count - n_pos)
    pos = pos[torch.randperm(pos.numel(), generator=gen)[:n_pos].to(pos.device)]
    neg = neg[torch.randperm(neg.numel(), generator=gen)[:n_neg].to(neg.device)]
    return pos, neg


class RPN(nn.Module):
    """Objectness and box deltas for every anchor of every pyramid level.

    Parameters
    ----------
    channels : int
        Channels of the pyramid levels.
    sizes : list of float
        Anchor size per level.
    strides : list of int
        Stride per level.
    """

    def __init__(self, channels: int, sizes: list[float], strides: list[int]) -> None:
        super().__init__()
        a = len(ASPECT_RATIOS)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, a, 1)
        self.deltas = nn.Conv2d(channels, 4 * a, 1)
        self.sizes = list(sizes)
        self.strides = list(strides)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, levels: list[torch.Tensor]):
        """Per level: ``(N, H*W*A)`` logits, ``(N, H*W*A, 4)`` deltas and the anchors."""
        logits, deltas, anchors = [], [], []
        for f, size, stride in zip(levels, self.sizes, self.strides):
            t = F.relu(self.conv(f))
            n, _, h, w = f.shape
            logits.append(self.objectness(t).permute(0, 2, 3, 1).reshape(n, -1))
            deltas.append(self.deltas(t).permute(0, 2, 3, 1).reshape(n, -1, 4))
            anchors.append(level_anchors(size, stride, h, w, f.device))
        return logits, deltas, anchors

    @staticmethod
    def proposals(
        logits, deltas, anchors, image_size: tuple[int, int], pre_nms: int, post_nms: int
    ) -> list[torch.Tensor]:
        """Per image, the best boxes after decoding, clipping and NMS (IoU 0.7)."""
        height, width = image_size
        out = []
        for i in range(logits[0].shape[0]):
            boxes, scores = [], []
            for lg, dl, an in zip(logits, deltas, anchors):
                k = min(pre_nms, lg.shape[1])
                top = lg[i].topk(k).indices
                boxes.append(clip_boxes(decode(dl[i, top], an[top], RPN_WEIGHTS), height, width))
                scores.append(lg[i, top])
            b, s = torch.cat(boxes).detach(), torch.cat(scores).detach()
            wide = ((b[:, 2] - b[:, 0]) > 1) & ((b[:, 3] - b[:, 1]) > 1)
            b, s = b[wide], s[wide]
            out.append(b[nms(b, s, 0.7)[:post_nms]])
        return out

    @staticmethod
    def loss(logits, deltas, anchors, gt_boxes: list[torch.Tensor], gen=None) -> torch.Tensor:
        """Objectness (binary cross-entropy) plus smooth-L1 box loss on sampled anchors."""
        all_anchors = torch.cat(anchors)
        all_logits = torch.cat(logits, dim=1)
        all_deltas = torch.cat(deltas, dim=1)
        cls_loss, box_loss = [], []
        for i, gt in enumerate(gt_boxes):
            labels, matched = match(box_iou(gt, all_anchors), 0.7, 0.3, allow_low=True)
            pos, neg = sample(labels, 256, 0.5, gen)
            idx = torch.cat([pos, neg])
            cls_loss.append(
                F.binary_cross_entropy_with_logits(all_logits[i, idx], labels[idx], reduction="sum")
                / max(idx.numel(), 1)
            )
            if pos.numel():
                target = encode(gt[matched[pos]], all_anchors[pos], RPN_WEIGHTS)
                box_loss.append(
                    F.smooth_l1_loss(all_deltas[i, pos], target, beta=1 / 9, reduction="sum")
                    / max(idx.numel(), 1)
                )
        total = torch.stack(cls_loss).mean()
        if box_loss:
            total = total + torch.stack(box_loss).sum() / len(gt_boxes)
        return total
