"""What ``train`` writes into a trained model: class names, diameter, settings, history."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import SegNetError
from ..models import SegNet
from .epochs import EpochLoop
from .prepare import Plan, TrainingData
from .scale import object_diameter
from .settings import TrainOptions
from .targets import INSTANCE_CLASSES


def output_class_names(
    target: str, n_classes: int, given: list[str] | None, model: str | SegNet
) -> list[str] | None:
    """Output class names: fixed for instances, else given, kept from a fine-tuned
    model, or numbered."""
    if target == "instances":
        return INSTANCE_CLASSES
    if given:
        if not isinstance(given, (list, tuple)) or len(given) != n_classes:
            raise SegNetError(
                f"class_names must be a list of {n_classes} names (one per output class, "
                f"background first), not {given!r}"
            )
        return [str(c) for c in given]
    if isinstance(model, SegNet):
        return list(model.metadata.classes) or None
    if target == "semantic":
        return ["background"] + [f"class {i}" for i in range(1, n_classes)]
    return [f"scribble {i}" for i in range(1, n_classes + 1)]


def training_record(
    loop: EpochLoop,
    plan: Plan,
    options: TrainOptions,
    *,
    tuned: bool,
    fine_tuned_from: str | None,
) -> dict[str, Any]:
    """The settings and results of the run, as stored in ``meta["training"]``."""
    best = loop.best_score
    return {
        "epochs": loop.epoch if loop.history["epoch"] else 0,
        "steps": loop.step,
        "seconds": round(loop.budget.elapsed(), 1),
        "patch_size": list(plan.patch_size),
        "batch_size": plan.batch_size,
        "workers": options.workers,
        "w0": options.w0,
        "sigma": options.sigma,
        "lr": loop.lr,
        "optimizer": options.optimizer,
        "seed": options.seed,
        "augmentation": asdict(plan.augmentation),
        "best_epoch": loop.best_epoch,
        "best_score": None if best == -math.inf or not plan.val_pairs else best,
        "instance_options_tuned": tuned,
        "fine_tuned_from": fine_tuned_from,
    }


def collection_record(data: TrainingData, plan: Plan) -> dict[str, Any]:
    """The images a collection run used: counts and split, per modality."""
    coll = data.collection
    if coll is None:
        return {}
    val_sources = sorted({p.source for p in plan.val_pairs})
    train_sources = sorted({p.source for p in plan.train_pairs})
    modalities: dict[str, dict[str, int]] = {}
    for side, sources in (("train", train_sources), ("validation", val_sources)):
        for i in sources:
            entry = modalities.setdefault(coll.modalities[i] or "unknown", {})
            entry[side] = entry.get(side, 0) + 1
    return {
        "name": coll.name,
        "images": len(coll),
        "channels": coll.channels,
        "train_images": len(train_sources),
        "validation_images": len(val_sources),
        "validation_ids": [coll.ids[i] for i in val_sources],
        "modalities": modalities,
    }


def split_record(plan: Plan) -> list[dict[str, Any]]:
    """The validation data, one entry per held-out pair.

    Each entry gives the ``image`` (its index in the images given), the ``slice`` of
    its stack (empty for a 2D image or a volume) and ``start``: where along X the
    held-out part begins, as a fraction of the image's width (0: the whole image).
    """
    return [
        {"image": p.source, "slice": list(p.index), "start": round(float(p.start), 4)}
        for p in plan.val_pairs
    ]


def extra_record(loop: EpochLoop, data: TrainingData, options: TrainOptions) -> dict[str, Any]:
    """What a run records beyond :func:`training_record`: collection, rescaling, resume."""
    out: dict[str, Any] = {"validation_split": split_record(loop.plan)}
    if data.collection is not None:
        out["collection"] = collection_record(data, loop.plan)
    if options.diameter is not None:
        ds = data.source_diameters or []
        out["diameter"] = {
            "target": float(options.diameter),
            "source_range": [round(min(ds), 2), round(max(ds), 2)] if ds else None,
            "source_median": round(float(np.median(ds)), 2) if ds else None,
        }
    if loop.resumed_from is not None:
        out["resumed_from"] = loop.resumed_from
    return out


def write_meta(
    net: SegNet,
    data: TrainingData,
    training: dict[str, Any],
    *,
    target: str,
    names: list[str] | None,
    spacing: Any,
    tuned: dict | None,
) -> None:
    """Write what was learnt into ``net.meta`` (its keys and their order as always).

    Values the run did not measure (diameter, pixel size) keep the model's own.
    """
    if tuned is not None:
        # Merged into the stored dict as it is: options set there before are kept.
        net.meta["instance_options"] = {**(net.meta.get("instance_options") or {}), **tuned}
    kept = net.metadata
    diameter = object_diameter(data.labels) if target == "instances" else None
    if training.get("diameter"):
        diameter = training["diameter"]["target"]
    if training.get("diameter"):
        # Images rescaled to a common object size no longer share one pixel size.
        pixel_size = None
    elif spacing is not None:
        pixel_size = list(spacing)
    else:
        pixel_size = None if kept.pixel_size is None else list(kept.pixel_size)
    net.meta.update(
        classes=names,
        target=target,
        normalization=data.normalization,
        diameter=diameter if diameter is not None else kept.diameter,
        pixel_size=pixel_size,
        trained=True,
        training=training,
    )


def finish(
    net: SegNet,
    loop: EpochLoop,
    data: TrainingData,
    options: TrainOptions,
    *,
    names: list[str] | None,
    fine_tuned_from: str | None,
    spacing: Any,
    tuned: dict | None,
) -> None:
    """Record the run in ``net`` (``meta`` and ``history``) and send the final update."""
    training = training_record(
        loop, loop.plan, options, tuned=tuned is not None, fine_tuned_from=fine_tuned_from
    )
    training.update(extra_record(loop, data, options))
    write_meta(
        net, data, training, target=options.target, names=names, spacing=spacing, tuned=tuned
    )
    net.history = loop.history
    loop.report("done", loop.history["loss"][-1] if loop.history["loss"] else float("nan"))
