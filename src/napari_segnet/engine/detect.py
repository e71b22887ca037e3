"""Tiled Mask R-CNN inference: detections per tile, kept once, merged into instance labels.

The image is cut into tiles whose cores cover it once; each tile adds ``overlap``
pixels of real context on every side (mirror padding only at the image border), and
starts on the network's stride grid. With the default overlap (the largest object
or the network's receptive radius, whichever is larger) a tile computes for the
objects it keeps what a run on the whole image computes.
A detection is kept by the tile whose core holds its box centre, so an object cut
by one tile's edge is taken whole from the tile that sees it around its centre; the
few objects found by two tiles (centres on either side of a core edge) are merged
by box IoU, keeping the higher score. Masks are then painted in descending score:
a pixel claimed by two objects goes to the higher-scoring one.
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import checks
from ..errors import Cancelled, SegNetError, SegNetWarning
from ..options import Normalization
from .axes import make_layout
from .devices import resolve_device
from .normalize import apply_normalization, normalization_stats

# Default core of a tile (pixels per side) before the overlap is added.
TILE_CORE = 512


@dataclass
class Detections:
    """Instance labels and, per object, its score and box.

    Attributes
    ----------
    labels : numpy.ndarray
        int32 ``(Y, X)``, 0 = background; object ``i`` (from 1) has label ``i``.
    scores : numpy.ndarray
        float32 ``(N,)``: the score of object ``i + 1``.
    boxes : numpy.ndarray
        float32 ``(N, 4)``: ``(y0, x0, y1, x1)`` in pixels of the image.
    foreground : numpy.ndarray
        float32 ``(Y, X)``: the mask probability of the object painted at each pixel.
    info : dict
        Tiles, tile core, overlap and device used.
    """

    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    foreground: np.ndarray
    info: dict = field(default_factory=dict)

    def features(self) -> dict[str, np.ndarray]:
        """Per-object table (label, score, box corners), as napari layer features."""
        n = len(self.scores)
        return {
            "label": np.arange(1, n + 1, dtype=np.int32),
            "score": self.scores,
            "y0": self.boxes[:, 0],
            "x0": self.boxes[:, 1],
            "y1": self.boxes[:, 2],
            "x1": self.boxes[:, 3],
        }


def normalized_image(image, model, axes: str | None = None) -> np.ndarray:
    """A 2D image as ``(C, Y, X)`` float32, normalised as the model's metadata says.

    Raises
    ------
    SegNetError
        For anything but one 2D image (with channels): a stack or a volume.
    """
    layout = make_layout(tuple(np.shape(image)), axes, 2, model.in_channels)
    if layout.outer:
        raise SegNetError(
            f"Mask R-CNN detects in 2D images; the axes {layout.axes!r} hold a stack or a "
            "volume: pass one plane at a time (e.g. image[z])"
        )
    arr = np.asarray(image)
    chw = arr[None] if layout.channel is None else np.moveaxis(arr, layout.channel, 0)
    if chw.shape[0] != model.in_channels:
        raise SegNetError(
            f"the model takes {model.in_channels} channel(s), the image has {chw.shape[0]}"
        )
    spec = Normalization.from_dict(model.meta.get("normalization"))
    stats = normalization_stats(arr, layout, spec).reshape(-1, 2)
    out = apply_normalization(chw, stats)
    checks.finite(out, "image")
    return out


def paste_mask(mask: torch.Tensor, box: np.ndarray, height: int, width: int):
    """A ``size x size`` mask probability resampled to the pixels its box covers.

    The box is in torchvision's coordinates (pixel ``i``'s centre at ``i``), as the
    mask targets were sampled in training. Only the box's region is sampled:
    torchvision's ``paste_masks_in_image`` makes a full-image array per object,
    gigabytes on a dense tile.

    Returns
    -------
    (slice, slice), numpy.ndarray
        The region of the image (clipped to it) and the probabilities there.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    ix0, iy0 = max(math.ceil(x0), 0), max(math.ceil(y0), 0)
    ix1, iy1 = min(math.floor(x1) + 1, width), min(math.floor(y1) + 1, height)
    if ix1 <= ix0 or iy1 <= iy0:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), np.float32)
    # Pixel centres of the region, in the mask's normalised coordinates.
    px = (torch.arange(ix0, ix1, dtype=torch.float32) - x0) / max(x1 - x0, 1e-6)
    py = (torch.arange(iy0, iy1, dtype=torch.float32) - y0) / max(y1 - y0, 1e-6)
    gx, gy = torch.broadcast_tensors(px[None, :] * 2 - 1, py[:, None] * 2 - 1)
    grid = torch.stack([gx, gy], dim=-1)[None]
    probs = F.grid_sample(
        mask[None, None].float().cpu(), grid, align_corners=False, padding_mode="border"
    )
    return (slice(iy0, iy1), slice(ix0, ix1)), probs[0, 0].numpy()


def _tiles(size: int, core: int) -> list[tuple[int, int]]:
    """Core intervals covering ``[0, size)`` once."""
    n = max(1, math.ceil(size / core))
    edges = np.linspace(0, size, n + 1).round().astype(int)
    return list(itertools.pairwise(edges))


def _padded(x: np.ndarray, y0: int, y1: int, x0: int, x1: int, divisor: int):
    """``x[:, y0:y1, x0:x1]`` mirror-padded where it leaves the image and up to ``divisor``."""
    _, h, w = x.shape
    ty = y1 - y0 + (-(y1 - y0)) % divisor
    tx = x1 - x0 + (-(x1 - x0)) % divisor
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y0 + ty, h), min(x0 + tx, w)
    crop = x[:, cy0:cy1, cx0:cx1]
    pad = ((0, 0), (cy0 - y0, y0 + ty - cy1), (cx0 - x0, x0 + tx - cx1))
    mode = "reflect" if min(crop.shape[1:]) > 1 else "edge"
    # Reflection repeats when the pad is longer than the image (tiny images).
    while any(p[0] >= crop.shape[i] or p[1] >= crop.shape[i] for i, p in enumerate(pad) if i):
        step = tuple(
            (0, 0) if i == 0 else (min(a, crop.shape[i] - 1), min(b, crop.shape[i] - 1))
            for i, (a, b) in enumerate(pad)
        )
        crop = np.pad(crop, step, mode=mode)
        pad = tuple((a - s[0], b - s[1]) for (a, b), s in zip(pad, step))
    return np.pad(crop, pad, mode=mode)


def detect(
    image,
    model,
    axes: str | None = None,
    *,
    score_threshold: float | None = None,
    nms_threshold: float | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    device="auto",
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> Detections:
    """Instance labels from a Mask R-CNN model, tile by tile for any image size.

    Parameters
    ----------
    image : array-like
        One 2D image, ``(Y, X)`` or with a channel axis. Never modified.
    model : MaskRCNN
        From ``build_model("maskrcnn")``, :func:`train` or :func:`load_model`.
    axes : str, optional
        ``"YX"``, ``"YXC"`` or ``"CYX"``; guessed if None.
    score_threshold, nms_threshold : float, optional
        Smallest score kept, and the box IoU above which the lower-scoring of two
        detections is dropped; None: the model's (``config``).
    tile_size : int, optional
        Core of a tile in pixels per side (default 512); the image is one tile when
        it fits.
    overlap : int, optional
        Context added to each side of a tile: at least the largest object (default the
        model's ``tile_overlap``: its ``max_diameter`` or its receptive radius,
        whichever is larger, rounded up to a multiple of its ``divisor``).
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    progress : callable, optional
        ``progress(done, total)`` in tiles.
    cancel : threading.Event, optional
        Set it to stop with :class:`~napari_segnet.errors.Cancelled`.

    Returns
    -------
    Detections

    Warns
    -----
    SegNetWarning
        When a kept object touches a tile's inner edge: it is larger than the overlap
        and may be cut; give a larger ``overlap`` (or ``tile_size``).
    """
    score_t = float(model.config["score_threshold"] if score_threshold is None else score_threshold)
    nms_t = float(model.config["nms_threshold"] if nms_threshold is None else nms_threshold)
    checks.number("score_threshold", score_t, low=0, high=1)
    checks.number("nms_threshold", nms_t, low=0, high=1, low_open=True)
    core = TILE_CORE if tile_size is None else checks.integer("tile_size", tile_size, low=16)
    needed = getattr(model, "tile_overlap", model.max_diameter)
    default_overlap = int(math.ceil(needed / model.divisor) * model.divisor)
    margin = default_overlap if overlap is None else checks.integer("overlap", overlap, low=0)
    checks.callback("progress", progress)
    checks.cancel_event(cancel)
    x = normalized_image(image, model, axes)
    _, h, w = x.shape
    ys = [(0, h)] if h <= core + 2 * margin else _tiles(h, core)
    xs = [(0, w)] if w <= core + 2 * margin else _tiles(w, core)
    dev = resolve_device(device)
    net = model.to(dev).eval()
    found: list[tuple[np.ndarray, float, torch.Tensor]] = []
    cut = 0
    total, done = len(ys) * len(xs), 0
    for cy0, cy1 in ys:
        for cx0, cx1 in xs:
            if cancel is not None and cancel.is_set():
                raise Cancelled("detection cancelled")
            single = (cy0, cy1, cx0, cx1) == (0, h, 0, w)
            # Tiles start on the coarsest stride's grid, as the whole image does, so
            # a tile's feature cells are the whole image's.
            div = net.divisor
            ty0 = 0 if single else max((cy0 - margin) // div * div, 0)
            tx0 = 0 if single else max((cx0 - margin) // div * div, 0)
            ty1, tx1 = (h, w) if single else (min(cy1 + margin, h), min(cx1 + margin, w))
            tile = _padded(x, ty0, ty1, tx0, tx1, net.divisor)
            with torch.no_grad():
                res = net(torch.from_numpy(tile)[None].to(dev))[0]
            keep = res["scores"] >= score_t
            for box, score, mask in zip(
                res["boxes"][keep].cpu().numpy(),
                res["scores"][keep].cpu().numpy(),
                res["masks"][keep].cpu(),
            ):
                gbox = box + np.array([tx0, ty0, tx0, ty0], np.float32)
                cx, cy = (gbox[0] + gbox[2]) / 2, (gbox[1] + gbox[3]) / 2
                # Pixel i's centre is at i: the core's pixels cy0..cy1-1 own the
                # centres in [cy0 - 0.5, cy1 - 0.5). A centre in the mirror padding
                # beyond the image is a reflection of an object, not one.
                inside = cy0 - 0.5 <= cy < cy1 - 0.5 and cx0 - 0.5 <= cx < cx1 - 0.5
                if not inside:
                    continue
                inner = [
                    ty0 > 0 and gbox[1] <= ty0,
                    tx0 > 0 and gbox[0] <= tx0,
                    ty1 < h and gbox[3] >= ty1 - 1,
                    tx1 < w and gbox[2] >= tx1 - 1,
                ]
                cut += any(inner)
                found.append((gbox, float(score), mask))
            done += 1
            if progress is not None:
                progress(done, total)
    if cut:
        warnings.warn(
            f"{cut} object(s) reach a tile's inner edge: they are larger than the tile "
            f"overlap ({margin} px) and may be cut; pass a larger overlap= (or tile_size=)",
            SegNetWarning,
            stacklevel=2,
        )
    labels, fg, scores, boxes = _paint(found, h, w, nms_t)
    info = {"n_tiles": total, "tile_core": core, "overlap": margin, "device": str(dev)}
    return Detections(labels, scores, boxes, fg, info)


def _paint(found, h: int, w: int, nms_t: float):
    """Merge duplicates across tiles and paint masks, best score first."""
    labels = np.zeros((h, w), np.int32)
    fg = np.zeros((h, w), np.float32)
    if not found:
        return labels, fg, np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    boxes = torch.from_numpy(np.stack([f[0] for f in found]))
    scores = torch.tensor([f[1] for f in found])
    from torchvision.ops import nms

    order = nms(boxes, scores, nms_t).numpy()  # best score first
    kept_scores, kept_boxes = [], []
    for i in order:
        box, score, mask = found[i]
        region, prob = paste_mask(mask, box, h, w)
        free = (prob >= 0.5) & (labels[region] == 0)
        if not free.any():
            continue
        n = len(kept_scores) + 1
        labels[region][free] = n
        fg[region][free] = prob[free]
        kept_scores.append(score)
        # Reported as pixel edges: rows y0 to y1 - 1, columns x0 to x1 - 1.
        kept_boxes.append([box[1] + 0.5, box[0] + 0.5, box[3] + 0.5, box[2] + 0.5])
    return (
        labels,
        fg,
        np.asarray(kept_scores, np.float32),
        np.asarray(kept_boxes, np.float32).reshape(-1, 4),
    )
