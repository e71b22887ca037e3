"""``train``: fit a network to annotations with the boundary-weighted loss."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import regionprops

from ..engine import predict
from ..engine.devices import resolve_device
from ..errors import SegNetError
from ..metrics import average_precision, mean_iou
from ..models import SegNet, build_model
from ..postprocess.instances import label_instances
from .augment import Augmentation
from .data import Pair, PatchSampler, as_list, load_pairs, split_validation
from .targets import IGNORE, INSTANCE_CLASSES, TARGETS, make_target
from .thresholds import MAX_PIXELS, tune_instance_options

# Defaults for a network built by ``train``: small enough to learn in minutes on a CPU.
TRAIN_DEFAULTS = {
    "unet": {"depth": 3, "width": 16},
    "deconvnet": {"depth": 3, "width": 16},
    "dilated": {"depth": 3, "width": 16, "output_stride": 4, "pool_size": 64, "rates": [2, 4, 6]},
}


@dataclass
class TrainingUpdate:
    """What ``progress`` receives after every step and after every epoch.

    Attributes
    ----------
    kind : str
        ``"step"``, ``"epoch"`` (validation done) or ``"done"``.
    epoch, step : int
        Current epoch (from 1) and global step (from 1).
    epochs : int or None
        Planned epochs, None when the run is bounded by time only.
    loss : float
        Training loss of the last step (``"step"``) or the epoch's mean.
    score : float or None
        Validation score of the epoch (mean IoU, or AP@0.5 for instances).
    best_score : float or None
        Best validation score so far.
    elapsed : float
        Seconds since training started.
    fraction : float
        How far along the run is (0..1), from epochs or from ``max_time``.
    model : SegNet or None
        On ``"epoch"`` updates, the network being trained, for previews: read it
        (``predict`` works on a private copy), do not change it.
    """

    kind: str
    epoch: int
    step: int
    epochs: int | None
    loss: float
    score: float | None
    best_score: float | None
    elapsed: float
    fraction: float
    model: Any = None


def _object_diameter(labels_list: list[np.ndarray]) -> float | None:
    ds = []
    for lab in labels_list:
        for p in regionprops(np.asarray(lab).astype(np.int32)):
            ds.append(
                2 * math.sqrt(p.area / math.pi)
                if lab.ndim == 2
                else (6 * p.area / math.pi) ** (1 / 3)
            )
    return float(np.median(ds)) if ds else None


def _n_classes(target: str, labels: list[np.ndarray]) -> int:
    if target == "instances":
        return 3
    top = max(int(np.asarray(lab).max()) for lab in labels)
    return top + 1 if target == "semantic" else top


def _check_classes(target: str, labels: list[np.ndarray]) -> None:
    present = set()
    for lab in labels:
        present |= set(np.unique(np.asarray(lab)).tolist())
    if target == "instances":
        if present <= {0}:
            raise SegNetError("the labels contain no objects: annotate some objects first")
        return
    if target == "scribbles":
        present.discard(0)
        if not present:
            raise SegNetError("no labelled pixels: paint scribbles (1, 2, ...) on the image first")
        if len(present) < 2:
            raise SegNetError(
                f"scribbles of a single class ({present.pop()}) cannot train a classifier: "
                "paint at least two classes (e.g. 1 = background, 2 = object)"
            )
        return
    if len(present) < 2:
        raise SegNetError(
            f"the labels hold a single class ({present.pop()}): a semantic target needs "
            "background (0) and at least one class"
        )


def _schedule(fraction: float, warmup: float = 0.05, floor: float = 0.05) -> float:
    if fraction < warmup:
        return max(fraction / warmup, 0.05)
    f = (fraction - warmup) / (1 - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(f, 1.0)))


def weighted_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pixel-weighted cross-entropy over labelled pixels (``target == -1`` ignored)."""
    mask = target != IGNORE
    ce = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    w = weight * mask
    return (ce * w).sum() / mask.sum().clamp(min=1)


def _val_probabilities(model: SegNet, val, device) -> list[np.ndarray]:
    net = copy.deepcopy(model).eval()
    net.meta["normalization"] = {"kind": "none"}  # validation images are normalised already
    axes = "C" + ("ZYX" if model.dims == 3 else "YX")
    return [predict(p.image, net, axes=axes, device=device) for p in val]


def _limit_pixels(pairs: list[Pair], limit: int) -> list[Pair]:
    """The first pairs, the last one cropped along its first axis, with at most
    ``limit`` pixels."""
    out, left = [], limit
    for p in pairs:
        if left <= 0:
            break
        if p.labels.size > left:
            rows = max(1, left // int(np.prod(p.labels.shape[1:])))
            p = Pair(p.image[:, :rows], p.target[:rows], p.weight[:rows], p.labels[:rows])
        out.append(p)
        left -= p.labels.size
    return out


def _score(model: SegNet, val, target: str, device) -> float:
    scores = []
    for p, prob in zip(val, _val_probabilities(model, val, device)):
        if target == "instances":
            pred = label_instances(prob, mode="boundary", ndim=model.dims)
            scores.append(average_precision(p.labels, pred, 0.5))
        else:
            scores.append(mean_iou(p.target, prob.argmax(0), model.n_classes, ignore=IGNORE))
    return float(np.nanmean(scores))


def _pretrained(
    pretrained: str | None,
    model: str,
    target: str,
    dims: int,
    channels: int,
    model_options: dict | None,
) -> SegNet | None:
    """The bundled model to start training from, as a private copy, or None."""
    if pretrained is None:
        return None
    if pretrained == "auto":
        fits = model == "unet" and target == "instances" and dims == 2 and channels == 1
        if not fits or model_options is not None:
            return None
        pretrained = "nuclei"
    from ..io.bundled import load_model

    if model_options is not None:
        raise SegNetError("model_options cannot change the architecture of a pretrained model")
    base = copy.deepcopy(load_model(pretrained)).cpu()
    if base.dims != dims or base.in_channels != channels:
        raise SegNetError(
            f"the {pretrained!r} model takes {base.in_channels}-channel {base.dims}D images, "
            f"not {channels}-channel {dims}D ones; use pretrained=None"
        )
    if target == "instances" and base.n_classes != 3:
        raise SegNetError(f"the {pretrained!r} model does not predict instances")
    base._pretrained = True
    return base


def train(
    images,
    labels,
    *,
    model: str | SegNet = "unet",
    target: str = "instances",
    epochs: int | None = None,
    max_time: float | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    device="auto",
    seed: int = 0,
    progress: Callable[[TrainingUpdate], None] | None = None,
    cancel: threading.Event | None = None,
    axes: str | None = None,
    dims: int = 2,
    model_options: dict[str, Any] | None = None,
    patch_size: int | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    validation: float = 0.15,
    patience: int | None = None,
    augmentation: Augmentation | None = None,
    spacing=None,
    class_names: list[str] | None = None,
    pretrained: str | None = "auto",
) -> SegNet:
    """Train (or fine-tune) a segmentation network on annotated images.

    Parameters
    ----------
    images : array or list of arrays
        Images (2D, 2D with channels, 2D stacks, or 3D volumes for ``dims=3``); of
        different sizes if you like. Never modified.
    labels : array or list of arrays
        One label image per image, the image's shape without its channel axis.
    model : str or SegNet
        An architecture name (``"unet"``, ``"deconvnet"``, ``"dilated"``) to build, or
        a model to fine-tune (a copy is trained; its classes and normalisation are kept).
    target : str
        ``"instances"``: instance ids become background / interior / boundary and the
        loss is weighted by :func:`boundary_weight_map` (``w0``, ``sigma``).
        ``"semantic"``: class ids, 0 = background. ``"scribbles"``: sparse labels,
        0 = unlabelled (ignored by the loss), 1..K = classes.
    epochs : int, optional
        Number of epochs. With neither ``epochs`` nor ``max_time``: 50 epochs.
    max_time : float, optional
        Stop after this many seconds (the learning-rate schedule follows the time),
        fitting of the instance thresholds included.
    w0, sigma : float
        Boundary weight map parameters.
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``. On CUDA: bfloat16 autocast and
        channels-last memory.
    seed : int
        Seeds weights, patch sampling and augmentation: on the CPU the same call gives
        the same model.
    progress : callable, optional
        Called with a :class:`TrainingUpdate` after every step and every epoch.
    cancel : threading.Event, optional
        Set it to stop within a step; the best model so far is returned.
    axes : str, optional
        Axes of the images (e.g. ``"YX"``, ``"YXC"``, ``"ZYX"``); guessed if None.
    dims : int
        2 or 3: the network's spatial dimensions when ``model`` is a name.
    model_options : dict, optional
        Options for :func:`build_model` (default for ``"unet"``: depth 3, width 16).
    patch_size, batch_size, steps_per_epoch : optional
        Training patches (default 128 in 2D, 64 in 3D), patches per step (8 in 2D,
        2 in 3D) and steps per epoch (from the annotated area, 10 to 100).
    lr, weight_decay, optimizer : optional
        Peak learning rate of the warm-up + cosine schedule (default 3e-3 from scratch,
        1e-3 when fine-tuning); ``"adamw"`` or ``"adam"``.
    validation : float
        Fraction held out for validation (whole images when there are four or more,
        else a strip at the right of each image); 0 for none. The model with the best
        validation score is returned.
    patience : int, optional
        Stop after this many epochs without a better validation score (default 20
        when bounded by epochs, none when bounded by time).
    augmentation : Augmentation, optional
        Patch augmentation (default: flips, 90° rotations, elastic deformation,
        intensity scale/shift/gamma and noise).
    spacing : sequence of float, optional
        Pixel size per axis, for the weight map of anisotropic data.
    class_names : list of str, optional
        Names of the output classes, stored with the model.
    pretrained : str or None
        Start from the weights of a bundled model (transfer learning) instead of random
        ones. ``"auto"``: instance training of single-channel 2D images with the default
        architecture (``model="unet"``, no ``model_options``) starts from the bundled
        ``"nuclei"`` model, which needs far less time and annotation to reach a good
        score; everything else starts from scratch. A bundled model's name (see
        :func:`available_models`) always starts from it; None never does.

    Returns
    -------
    SegNet
        The trained model in eval mode, with ``history`` and ``meta`` (target,
        classes, normalisation, typical object diameter, training settings). For
        instances, ``meta["instance_options"]`` holds the seed and foreground
        thresholds that labelled the validation data best
        (:func:`~napari_segnet.training.thresholds.tune_instance_options`), which
        ``segment`` then uses.
    """
    t0 = time.perf_counter()  # max_time counts from the call, preparation included
    if target not in TARGETS:
        raise SegNetError(f"target must be one of {TARGETS}, not {target!r}")
    if epochs is not None and epochs < 1:
        raise SegNetError("epochs must be at least 1")
    if max_time is not None and max_time <= 0:
        raise SegNetError("max_time must be positive (seconds)")
    if optimizer not in ("adamw", "adam"):
        raise SegNetError("optimizer must be 'adamw' or 'adam'")
    image_list, label_list = as_list(images), as_list(labels)
    label_list = [np.asarray(lab) for lab in label_list]
    if not image_list or len(image_list) != len(label_list):
        raise SegNetError(
            f"{len(image_list)} images but {len(label_list)} label images: "
            "give one label image per image"
        )
    _check_classes(target, label_list)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = resolve_device(device)

    if isinstance(model, SegNet):
        net = copy.deepcopy(model).cpu()
        needed = _n_classes(target, label_list)
        if target == "instances" and net.n_classes != 3:
            raise SegNetError(
                "an instance target needs a model with 3 classes (background, interior, boundary)"
            )
        if needed > net.n_classes:
            raise SegNetError(f"the labels use {needed} classes but the model has {net.n_classes}")
        dims = net.dims
        in_channels: int | None = net.in_channels
        norm_spec = net.meta.get("normalization") or {
            "kind": "percentile",
            "low": 1.0,
            "high": 99.8,
        }
    elif isinstance(model, str):
        net = None
        in_channels = None
        norm_spec = {"kind": "percentile", "low": 1.0, "high": 99.8}
    else:
        raise SegNetError("model must be an architecture name or a napari-segnet model")

    def target_of(lab):
        return make_target(lab, target, w0=w0, sigma=sigma, spacing=spacing)

    pairs, channels = load_pairs(
        image_list,
        label_list,
        dims=dims,
        in_channels=in_channels,
        axes=axes,
        norm_spec=norm_spec,
        make_target=target_of,
    )
    if not pairs or sum(p.n_labelled for p in pairs) == 0:
        raise SegNetError("no labelled pixels in the annotations")
    if net is None:
        net = _pretrained(pretrained, model, target, dims, channels, model_options)
    if net is not None and lr is None:
        lr = 1e-3  # fine-tuning: a gentler start keeps what the weights already know
    if net is None:
        opts = {**TRAIN_DEFAULTS.get(model, {}), **(model_options or {})}
        net = build_model(
            model, dims=dims, in_channels=channels, n_classes=_n_classes(target, label_list), **opts
        )
    lr = 3e-3 if lr is None else float(lr)
    start = getattr(net, "source", None) if getattr(net, "_pretrained", False) else None
    d = net.divisor
    smallest = min(min(p.target.shape) for p in pairs)
    if smallest < d:
        raise SegNetError(
            f"an image is {smallest} px on a side, smaller than this network's minimum "
            f"size ({d} px); use a shallower network or larger images"
        )

    # Patches, batches, steps.
    if patch_size is None:
        ps = (128,) * dims if dims == 2 else (32, 64, 64)
    else:
        ps = (patch_size,) * dims if np.isscalar(patch_size) else tuple(patch_size)
    ps = tuple(max(d, int(math.ceil(p / d) * d)) for p in ps)
    bs = int(batch_size or (8 if dims == 2 else 2))
    train_pairs, val_pairs = split_validation(pairs, validation, ps, rng)
    if not train_pairs:
        raise SegNetError("nothing left to train on after holding out validation data")
    sparse = target == "scribbles"
    aug = augmentation if augmentation is not None else Augmentation()
    sampler = PatchSampler(train_pairs, ps, aug, rng, sparse)
    labelled = sum(p.n_labelled for p in train_pairs)
    spe = steps_per_epoch or int(np.clip(labelled / (np.prod(ps) * bs) * 4, 10, 100))
    if epochs is None and max_time is None:
        epochs = 50
    if patience is None:
        patience = 20 if max_time is None else 10**9

    # Optimiser on the device.
    cuda = dev.type == "cuda"
    net = net.to(dev)
    if dims == 2:  # faster on CUDA and on the CPU (oneDNN)
        net = net.to(memory_format=torch.channels_last)
    opt_cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(net.parameters(), lr=lr, weight_decay=weight_decay if optimizer == "adamw" else 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    history: dict[str, list] = {"epoch": [], "loss": [], "score": [], "lr": [], "time": []}
    best_score, best_state, best_epoch = -math.inf, None, 0
    step = 0
    epoch = 0
    stop = False
    tune = target == "instances" and bool(val_pairs)
    val_pixels = sum(p.labels.size for p in val_pairs)
    budget = max_time

    def fraction() -> float:
        parts = []
        if epochs is not None:
            parts.append(step / (epochs * spe))
        if max_time is not None:
            parts.append((time.perf_counter() - t0) / budget)
        return min(max(parts), 1.0)

    def update(kind, loss, score=None):
        if progress is not None:
            progress(
                TrainingUpdate(
                    kind,
                    epoch,
                    step,
                    epochs,
                    float(loss),
                    score,
                    None if best_score == -math.inf else best_score,
                    time.perf_counter() - t0,
                    fraction(),
                    net if kind == "epoch" else None,
                )
            )

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sampler.batch, bs)
        while not stop:
            epoch += 1
            net.train()
            losses = []
            for _ in range(spe):
                if cancel is not None and cancel.is_set():
                    stop = True
                    break
                if max_time is not None and time.perf_counter() - t0 >= budget:
                    stop = True
                    break
                x, y, w = pending.result()
                pending = pool.submit(sampler.batch, bs)
                for g in opt.param_groups:
                    g["lr"] = lr * _schedule(fraction())
                xt = torch.from_numpy(x).to(dev, non_blocking=True)
                if dims == 2:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                yt = torch.from_numpy(y).to(dev)
                wt = torch.from_numpy(w).to(dev)
                with autocast:
                    logits = net(xt)
                loss = weighted_loss(logits, yt, wt)
                if not torch.isfinite(loss):
                    raise SegNetError("training diverged (loss is not finite); lower lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                losses.append(float(loss.detach()))
                update("step", losses[-1])
            if not losses:
                break
            t_val = time.perf_counter()
            score = _score(net, val_pairs, target, dev) if val_pairs else None
            if tune and max_time is not None:
                # Leave time for fitting the labelling thresholds after the loop: a
                # prediction and about a dozen labellings of (at most) this data; never
                # more than half the time.
                share = min(1.0, MAX_PIXELS / val_pixels)
                reserve = 12 * share * (time.perf_counter() - t_val)
                budget = max(max_time - reserve, 0.5 * max_time)
            mean_loss = float(np.mean(losses))
            history["epoch"].append(epoch)
            history["loss"].append(mean_loss)
            history["score"].append(score)
            history["lr"].append(opt.param_groups[0]["lr"])
            history["time"].append(time.perf_counter() - t0)
            key = score if score is not None else -mean_loss
            if key > best_score:
                best_score, best_epoch = key, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            update("epoch", mean_loss, score)
            if epochs is not None and epoch >= epochs:
                stop = True
            if max_time is not None and time.perf_counter() - t0 >= budget:
                stop = True
            if epoch - best_epoch >= patience:
                stop = True
        pending.cancel()

    if best_state is not None:
        net.load_state_dict(best_state)
    net = net.to(memory_format=torch.contiguous_format).cpu().eval()
    tuned = None
    if tune and not (cancel is not None and cancel.is_set()):
        fit = _limit_pixels(val_pairs, MAX_PIXELS)
        probs = _val_probabilities(net, fit, dev)
        tuned = tune_instance_options(probs, [p.labels for p in fit], dims)
    if tuned is not None:
        net.meta["instance_options"] = {**(net.meta.get("instance_options") or {}), **tuned}
    if target == "instances":
        names = INSTANCE_CLASSES
    elif class_names:
        names = list(class_names)
    elif isinstance(model, SegNet):
        names = model.meta.get("classes")
    elif target == "semantic":
        names = ["background"] + [f"class {i}" for i in range(1, net.n_classes)]
    else:
        names = [f"scribble {i}" for i in range(1, net.n_classes + 1)]
    diameter = _object_diameter(label_list) if target == "instances" else None
    net.meta.update(
        classes=names,
        target=target,
        normalization=norm_spec,
        diameter=diameter if diameter is not None else net.meta.get("diameter"),
        pixel_size=list(spacing) if spacing is not None else net.meta.get("pixel_size"),
        trained=True,
        training={
            "epochs": epoch if history["epoch"] else 0,
            "steps": step,
            "seconds": round(time.perf_counter() - t0, 1),
            "patch_size": list(ps),
            "batch_size": bs,
            "w0": w0,
            "sigma": sigma,
            "lr": lr,
            "optimizer": optimizer,
            "seed": seed,
            "augmentation": asdict(aug),
            "best_epoch": best_epoch,
            "best_score": None if best_score == -math.inf or not val_pairs else best_score,
            "instance_options_tuned": tuned is not None,
            "fine_tuned_from": getattr(model, "source", None)
            if isinstance(model, SegNet)
            else start,
        },
    )
    net.history = history
    update("done", history["loss"][-1] if history["loss"] else float("nan"))
    return net
