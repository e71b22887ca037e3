"""Box operations of a two-stage detector, in plain torch.

torchvision ships these as compiled operators, but its wheels on PyPI are built
against the CUDA build of torch and do not load next to the CPU build; these are
the same operations (box IoU, box coding, greedy NMS, RoIAlign with bilinear
sampling, pasting masks into an image) written with tensor operations only.
Boxes are ``(x0, y0, x1, y1)`` in pixel units, with pixel ``i`` covering ``[i, i+1)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Largest log size change a box delta may ask for (torchvision's clamp).
MAX_LOG_SCALE = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(N, 4)`` boxes."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` intersection over union of two sets of boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=1e-6)


def encode(reference: torch.Tensor, proposals: torch.Tensor, weights) -> torch.Tensor:
    """Deltas ``(dx, dy, dw, dh)`` that turn ``proposals`` into ``reference`` boxes."""
    wx, wy, ww, wh = weights
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
    gx, gy = reference[:, 0] + 0.5 * gw, reference[:, 1] + 0.5 * gh
    return torch.stack(
        [
            wx * (gx - px) / pw,
            wy * (gy - py) / ph,
            ww * torch.log(gw.clamp(min=1e-3) / pw),
            wh * torch.log(gh.clamp(min=1e-3) / ph),
        ],
        dim=1,
    )


def decode(deltas: torch.Tensor, boxes: torch.Tensor, weights) -> torch.Tensor:
    """Apply ``(N, 4)`` deltas to ``(N, 4)`` boxes (the inverse of :func:`encode`)."""
    wx, wy, ww, wh = weights
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=MAX_LOG_SCALE)
    dh = (deltas[:, 3] / wh).clamp(max=MAX_LOG_SCALE)
    ncx, ncy = cx + dx * w, cy + dy * h
    nw, nh = w * torch.exp(dw), h * torch.exp(dh)
    return torch.stack([ncx - nw / 2, ncy - nh / 2, ncx + nw / 2, ncy + nh / 2], dim=1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes clipped to a ``height`` x ``width`` image."""
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its IoU with a better-scoring kept box exceeds ``threshold``
    (ties in score are broken by index, as a stable sort does).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    b = boxes.detach().cpu().double().numpy()
    order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0])).clip(0)
        h = (np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1])).clip(0)
        inter = w * h
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= threshold]
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)


def _sample_grid(boxes: torch.Tensor, size: int, height: int, width: int, ratio: int):
    """Normalised ``grid_sample`` positions of ``ratio x ratio`` samples per output bin."""
    n = size * ratio
    steps = (torch.arange(n, device=boxes.device, dtype=boxes.dtype) + 0.5) / n
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    # align_corners=False: pixel i's centre is at i + 0.5, mapped to (2i + 1) / W - 1
    gx = xs * (2.0 / width) - 1.0
    gy = ys * (2.0 / height) - 1.0
    return torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)


def roi_align(
    features: torch.Tensor,
    boxes: list[torch.Tensor],
    size: int,
    scale: float,
    ratio: int = 2,
) -> torch.Tensor:
    """RoIAlign: each box's features averaged over bilinear samples into ``size x size`` bins.

    Parameters
    ----------
    features : torch.Tensor
        ``(N, C, H, W)`` feature maps.
    boxes : list of torch.Tensor
        Per image, ``(K_i, 4)`` boxes in image pixels.
    size : int
        Output bins per side.
    scale : float
        Feature pixels per image pixel (1 / stride).
    ratio : int
        Samples per bin and side.

    Returns
    -------
    torch.Tensor
        ``(sum K_i, C, size, size)``.
    """
    out = []
    _, c, h, w = features.shape
    for i, b in enumerate(boxes):
        if b.shape[0] == 0:
            continue
        grid = _sample_grid(b * scale, size, h, w, ratio)  # (K, n, n, 2)
        k, n = grid.shape[0], grid.shape[1]
        # All boxes of one image as one tall grid over that image's map.
        samples = F.grid_sample(
            features[i : i + 1],
            grid.reshape(1, k * n, n, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        samples = samples.reshape(c, k, n, n).permute(1, 0, 2, 3)
        out.append(F.avg_pool2d(samples, ratio) if ratio > 1 else samples)
    if not out:
        return features.new_zeros((0, c, size, size))
    return torch.cat(out)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``(K, size, size)`` crops of ``(K, H, W)`` binary masks inside ``(K, 4)`` boxes."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, size, size))
    h, w = masks.shape[-2:]
    grid = _sample_grid(boxes, size, h, w, 1)
    crops = F.grid_sample(masks[:, None].float(), grid, align_corners=False)
    return crops[:, 0]


def paste_mask(mask: torch.Tensor, box: np.ndarray, height: int, width: int):
    """A ``size x size`` mask probability resampled to the pixels its box covers.

    Returns
    -------
    (slice, slice), numpy.ndarray
        The region of the image (clipped to it) and the probabilities there.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    ix0, iy0 = max(math.floor(x0), 0), max(math.floor(y0), 0)
    ix1, iy1 = min(math.ceil(x1), width), min(math.ceil(y1), height)
    if ix1 <= ix0 or iy1 <= iy0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), np.float32)
    # Pixel centres of the region, in the mask's normalised coordinates.
    px = (torch.arange(ix0, ix1, dtype=torch.float32) + 0.5 - x0) / max(x1 - x0, 1e-6)
    py = (torch.arange(iy0, iy1, dtype=torch.float32) + 0.5 - y0) / max(y1 - y0, 1e-6)
    gx, gy = torch.broadcast_tensors(px[None, :] * 2 - 1, py[:, None] * 2 - 1)
    grid = torch.stack([gx, gy], dim=-1)[None]
    probs = F.grid_sample(
        mask[None, None].float().cpu(), grid, align_corners=False, padding_mode="zeros"
    )
    return (slice(iy0, iy1), slice(ix0, ix1)), probs[0, 0].numpy()
