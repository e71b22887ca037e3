"""Training Mask R-CNN from instance labels: boxes and masks come from the labels.

The run has the shape of :func:`~napari_segnet.train`'s: random patches with flips,
rotations and intensity changes, AdamW with a warm-up and cosine schedule bounded by
epochs or ``max_time``, validation on held-out images after every epoch (AP@0.5 of
tiled detection), the best model returned, progress updates and a cancel event.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from ..engine.detect import detect, normalized_image
from ..engine.devices import resolve_device
from ..errors import SegNetError
from ..metrics import average_precision
from ..models import SegNet, build_model
from ..options import Normalization
from .progress import TrainingUpdate
from .scale import object_diameter

DEFAULT_EPOCHS = 20
DEFAULT_STEPS = 25
WARMUP = 0.05


def _channels(image: np.ndarray, axes: str | None) -> int:
    """Channels of a 2D image from its axes (or its shape when None)."""
    if axes is not None:
        return 1 if "C" not in axes.upper() else int(image.shape[axes.upper().index("C")])
    if image.ndim == 2:
        return 1
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return int(image.shape[-1])
    raise SegNetError(
        f"Mask R-CNN trains on 2D images (Y, X) or (Y, X, channels), not shape {image.shape}: "
        "give axes= for other layouts; volumes and stacks are not supported"
    )


def targets_of(labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Boxes ``(x0, y0, x1, y1)``, binary masks and classes of every object in ``labels``.

    Boxes are in torchvision's coordinates, where pixel ``i``'s centre is at ``i``:
    an object over pixels ``a..b`` has the edges ``a - 0.5`` and ``b + 0.5``, so the
    mask targets torchvision samples with RoIAlign line up with the pixels.
    """
    labels = labels.astype(np.int64, copy=False)
    boxes, masks = [], []
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
        masks.append(labels == i)
    h, w = labels.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) - 0.5,
        "masks": torch.from_numpy(np.stack(masks))
        if masks
        else torch.zeros((0, h, w), dtype=torch.bool),
        "classes": torch.ones(len(boxes), dtype=torch.long),
    }


def _patch(image: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator):
    """A random ``size x size`` patch, flipped and rotated; padded with zeros if small."""
    _, h, w = image.shape
    y = int(rng.integers(0, max(h - size, 0) + 1))
    x = int(rng.integers(0, max(w - size, 0) + 1))
    img = np.zeros((image.shape[0], size, size), np.float32)
    lab = np.zeros((size, size), labels.dtype)
    crop_i, crop_l = image[:, y : y + size, x : x + size], labels[y : y + size, x : x + size]
    img[:, : crop_l.shape[0], : crop_l.shape[1]] = crop_i
    lab[: crop_l.shape[0], : crop_l.shape[1]] = crop_l
    k = int(rng.integers(4))
    img, lab = np.rot90(img, k, axes=(1, 2)), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, :, ::-1], lab[:, ::-1]
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
    # Objects cut by the patch edge stay objects: they are what the network sees.
    return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(lab)


def _split(n: int, validation: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Whole images held out for validation (none with one image or ``validation=0``)."""
    if n < 2 or validation <= 0:
        return list(range(n)), []
    n_val = min(max(1, round(validation * n)), n - 1)
    order = rng.permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def train_maskrcnn(
    images: list,
    labels: list[np.ndarray],
    *,
    model: str | SegNet = "maskrcnn",
    epochs: int | None = None,
    max_time: float | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    patch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    validation: float = 0.15,
    patience: int | None = None,
    axes: str | None = None,
    model_options: dict[str, Any] | None = None,
    device="auto",
    seed: int = 0,
    progress: Callable[[TrainingUpdate], None] | None = None,
    cancel: threading.Event | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> SegNet:
    """Train (or fine-tune) a Mask R-CNN on 2D images and their instance labels.

    :func:`~napari_segnet.train` calls this for ``model="maskrcnn"`` (or a Mask R-CNN
    model to fine-tune); the parameters mean what they mean there. Boxes and masks
    are derived from the labels. A new network's anchors follow the median object
    diameter of the labels, and its ``max_diameter`` (the tile overlap) the largest
    object, unless ``model_options`` sets them. Defaults: 20 epochs of 25 steps of
    4 patches of 128 x 128, learning rate 3e-3 (3e-4 when fine-tuning). ``checkpoint``
    is a folder where the best model so far is saved as ``model.segnet`` every
    ``checkpoint_every`` epochs (resuming is not supported for Mask R-CNN).

    Raises
    ------
    SegNetError
        For images that are not 2D, labels without any object, or bad options.
    """
    start = time.perf_counter()
    label_list = [np.asarray(lab) for lab in labels]
    if not images or len(images) != len(label_list):
        raise SegNetError(f"{len(images)} images but {len(label_list)} label images")
    if all(int(np.max(lab, initial=0)) == 0 for lab in label_list):
        raise SegNetError("the labels hold no objects: Mask R-CNN needs instances to learn")
    for lab in label_list:
        if lab.ndim != 2:
            raise SegNetError(
                f"Mask R-CNN trains on 2D label images, not shape {lab.shape}: volumes and "
                "stacks are not supported (train slice by slice, or a 3D 'unet')"
            )
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if isinstance(model, SegNet):
        net, fine_tune = copy.deepcopy(model).cpu(), True
    else:
        diameter = object_diameter(label_list) or 16.0
        largest = max(
            float(max(s.stop - s.start for s in sl))
            for lab in label_list
            for sl in ndi.find_objects(lab.astype(np.int64, copy=False))
            if sl is not None
        )
        opts = {
            "diameter": float(min(max(diameter, 4.0), 512.0)),
            "max_diameter": float(min(max(1.25 * largest, 4 * diameter), 4096)),
            **(model_options or {}),
        }
        channels = _channels(np.asarray(images[0]), axes)
        net, fine_tune = build_model("maskrcnn", in_channels=channels, n_classes=2, **opts), False
        net.meta["normalization"] = Normalization().to_dict()
    xs = [normalized_image(np.asarray(im), net, axes) for im in images]
    for x, lab in zip(xs, label_list):
        if x.shape[1:] != lab.shape:
            raise SegNetError(f"an image of shape {x.shape[1:]} has labels of shape {lab.shape}")
    train_idx, val_idx = _split(len(xs), validation, rng)
    size = int(patch_size or 128)
    size += (-size) % net.divisor
    batch = int(batch_size or 4)
    steps = int(steps_per_epoch or DEFAULT_STEPS)
    n_epochs = epochs if epochs is not None else (None if max_time else DEFAULT_EPOCHS)
    peak = float(lr if lr is not None else (3e-4 if fine_tune else 3e-3))
    dev = resolve_device(device)
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=peak, weight_decay=weight_decay)
    history: dict[str, list] = {"epoch": [], "loss": [], "score": [], "lr": [], "time": []}
    best_state, best_score, waited = None, -math.inf, 0
    step, epoch = 0, 0

    def fraction() -> float:
        parts = []
        if n_epochs is not None:
            parts.append(step / (n_epochs * steps))
        if max_time is not None:
            parts.append((time.perf_counter() - start) / max_time)
        return min(max(parts), 1.0)

    def update(kind: str, loss: float, score=None, with_model=False) -> None:
        if progress is not None:
            best = None if best_score == -math.inf else best_score
            progress(
                TrainingUpdate(
                    kind,
                    epoch,
                    step,
                    n_epochs,
                    loss,
                    score,
                    best,
                    time.perf_counter() - start,
                    fraction(),
                    net if with_model else None,
                )
            )

    stop = False
    while not stop:
        epoch += 1
        losses = []
        for _ in range(steps):
            if cancel is not None and cancel.is_set():
                stop = True
                break
            f = fraction()
            opt.param_groups[0]["lr"] = peak * (
                f / WARMUP if f < WARMUP else 0.5 * (1 + math.cos(math.pi * f))
            )
            picks = [train_idx[int(rng.integers(len(train_idx)))] for _ in range(batch)]
            patches = [_patch(xs[i], label_list[i], size, rng) for i in picks]
            x = torch.from_numpy(np.stack([p[0] for p in patches])).to(dev)
            targets = [{k: v.to(dev) for k, v in targets_of(p[1]).items()} for p in patches]
            loss = net(x, targets)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            update("step", losses[-1])
            if fraction() >= 1.0:
                stop = True
                break
        if not losses:
            break
        net.eval()
        score = _validate(net, [xs[i] for i in val_idx], [label_list[i] for i in val_idx], dev)
        net.train()
        mean = float(np.mean(losses))
        for key, value in zip(
            history, (epoch, mean, score, opt.param_groups[0]["lr"], time.perf_counter() - start)
        ):
            history[key].append(value)
        compare = score if score is not None else -mean
        if compare > best_score:
            best_score, waited = compare, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            waited += 1
        update("epoch", mean, score, with_model=True)
        if checkpoint is not None and epoch % checkpoint_every == 0:
            _save_checkpoint(net, best_state, checkpoint)
        if patience is not None and waited >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    net.meta.update(
        classes=["background", "object"],
        target="instances",
        diameter=object_diameter(label_list),
        trained=True,
        training={
            "arch": "maskrcnn",
            "epochs": epoch,
            "steps": step,
            "seconds": round(time.perf_counter() - start, 1),
            "patch_size": [size, size],
            "batch_size": batch,
            "lr": peak,
            "validation_images": len(val_idx),
            "best_score": None if best_score == -math.inf or not val_idx else best_score,
            "fine_tuned_from": model.source if isinstance(model, SegNet) else None,
        },
    )
    net.history = history
    update("done", history["loss"][-1] if history["loss"] else float("nan"))
    return net


def _validate(net: SegNet, xs: list[np.ndarray], labels: list[np.ndarray], dev) -> float | None:
    """Mean AP@0.5 of detection on the held-out images (None without any)."""
    if not xs:
        return None
    spec = {"kind": "none"}
    saved = net.meta.get("normalization")
    net.meta["normalization"] = spec  # the held-out images are normalised already
    try:
        scores = [
            average_precision(lab, detect(x, net, "CYX", device=dev).labels, 0.5)
            for x, lab in zip(xs, labels)
        ]
    finally:
        net.meta["normalization"] = saved
    return float(np.mean(scores))


def _save_checkpoint(net: SegNet, best_state, folder: str | os.PathLike) -> None:
    from ..io.model_files import save_model  # io imports models: only when used

    snapshot = copy.deepcopy(net).cpu()
    if best_state is not None:
        snapshot.load_state_dict(best_state)
    snapshot.eval()
    save_model(snapshot, Path(folder) / "model.segnet", overwrite=True)
