"""Train the bundled nuclei models on the public DSB2018 data (CC0), reproducibly.

Run (from the repository root):

    python scripts/train_bundled.py --data ../shared/data/dsb2018 \\
        --split benchmarks/dsb2018_split.csv --kind grey --minutes 60 --out build/models

``--kind grey`` trains on the fluorescence and brightfield images (one channel; the
intensity inversion augmentation lets one model see both dark-on-bright and
bright-on-dark nuclei), ``--kind rgb`` on the stained (colour) ones. Only the rows
with ``split == train`` in the split CSV are used; without the CSV, ``--val-fraction``
of the images of each modality is set aside by a fixed hash of their ids.

Writes DIR/nuclei_<kind>.segnet and DIR/nuclei_<kind>.json (the model card, also in
the model's ``meta["card"]``), and checkpoints to DIR/checkpoint_<kind> (continue an
interrupted run with ``--resume DIR/checkpoint_<kind>``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path

import torch

import napari_segnet as ns
from napari_segnet.io.collection import read_collection
from napari_segnet.training.augment import Augmentation

KINDS = {"grey": ("fluorescence", "brightfield"), "rgb": ("stained",)}
CHANNELS = {"grey": 1, "rgb": 3}
LICENCE = "CC0-1.0"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def held_out(image_id: str, fraction: float) -> bool:
    """A fixed, platform-independent choice of about ``fraction`` of the ids."""
    h = int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def training_ids(data: Path, split: Path | None, kind: str, val_fraction: float) -> list[str]:
    """Ids of the ``kind`` images to train on: the split's train rows, else a hash split."""
    modality = {r["id"]: r["modality"] for r in read_rows(data / "index.csv")}
    wanted = KINDS[kind]
    if split is not None and split.is_file():
        rows = read_rows(split)
        ids = [r["id"] for r in rows if r["split"] == "train"]
        print(f"split {split}: {len(ids)} training rows of {len(rows)}")
    else:
        if split is not None:
            print(f"{split} not found: holding out {val_fraction:.0%} of each modality by id")
        ids = [i for i in modality if not held_out(i, val_fraction)]
    return sorted(i for i in ids if modality.get(i) in wanted)


def citation(data: Path) -> str:
    """The citation sentence of the data set's README (the paper it asks to cite)."""
    text = " ".join((data / "README.md").read_text().split())
    found = re.search(r"Caicedo et al\.,[^)]*", text)
    return found.group(0).strip() if found else "see the data set's README"


def hardware(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the DSB2018 collection folder")
    p.add_argument("--split", default=None, help="CSV with id, modality, split columns")
    p.add_argument("--val-fraction", type=float, default=0.2, help="without --split")
    p.add_argument("--kind", choices=sorted(KINDS), required=True)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", default=None, help="checkpoint folder to continue from")
    p.add_argument("--init", default=None, help="a model file of this script to go on from")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (DIR/checkpoint_KIND)")
    p.add_argument("--diameter", type=float, default=20.0, help="object diameter trained at")
    p.add_argument("--patch-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="patch sampling processes (GPU)")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    data, out = Path(a.data), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = training_ids(data, Path(a.split) if a.split else None, a.kind, a.val_fraction)
    collection = read_collection(data, channels=CHANNELS[a.kind], ids=ids)
    print(f"{len(collection)} {a.kind} images: {collection.modality_counts()}")
    aug = Augmentation(zoom=0.5, zoom_range=(0.67, 1.5), blur=0.2, noise=0.05)
    if a.kind == "grey":
        aug.invert = 0.5
    else:
        aug.stain = 0.5

    steps: list[tuple[int, float]] = []  # (step, elapsed) of the first and latest step

    def progress(u):
        if u.kind == "step":
            steps[1:] = [(u.step, u.elapsed)]
            if len(steps) == 1:
                print(f"first step after {u.elapsed:.0f} s (reading and preparing)", flush=True)
        if u.kind == "epoch":
            print(
                f"epoch {u.epoch} step {u.step} loss {u.loss:.4f} val AP@0.5 {u.score} "
                f"({u.elapsed:.0f} s)",
                flush=True,
            )

    # Going on from an earlier run's model: a new schedule, the time and steps add up.
    init = ns.load_model(a.init) if a.init else None
    before = init.meta.get("card", {}) if init is not None else {}
    t = time.perf_counter()
    model = ns.train(
        collection,
        None,
        model=init if init is not None else "unet",
        target="instances",
        model_options=None if init is not None else {"depth": 4, "width": 16},
        pretrained=None,
        max_time=a.minutes * 60,
        seed=a.seed,
        patch_size=a.patch_size,
        batch_size=a.batch_size,
        lr=a.lr,
        steps_per_epoch=a.steps_per_epoch,
        workers=a.workers,
        validation=0.15,
        augmentation=aug,
        diameter=a.diameter,
        device=a.device,
        checkpoint=a.checkpoint or out / f"checkpoint_{a.kind}",
        resume=a.resume,
        progress=progress,
    )
    seconds = time.perf_counter() - t
    rec = model.meta["training"]
    # Training speed between the first and the last step (preparation and validation
    # time included in between, so a lower bound of the optimisation's own speed).
    if len(steps) == 2 and steps[1][1] > steps[0][1]:
        speed = (steps[1][0] - steps[0][0]) * rec["batch_size"] / (steps[1][1] - steps[0][1])
    else:
        speed = None
    card = {
        "name": f"nuclei_{a.kind}",
        "training_data": "DSB2018 nuclei (BBBC038v1), stage 1 training set, community fixes",
        "licence": LICENCE,
        "citation": citation(data),
        "modalities": collection.modality_counts(),
        "images": rec["collection"]["images"],
        "train_images": rec["collection"]["train_images"],
        "validation_images": rec["collection"]["validation_images"],
        "diameter": a.diameter,
        "diameter_range": rec["diameter"]["source_range"],
        "training_seconds": round(seconds) + before.get("training_seconds", 0),
        "steps": rec["steps"] + before.get("steps", 0),
        "runs": [*before.get("runs", []), {"seconds": round(seconds), "steps": rec["steps"]}],
        "patches_per_second": None if speed is None else round(speed, 2),
        "patch_size": a.patch_size,
        "batch_size": a.batch_size,
        "hardware": hardware(a.device),
        "best_validation_ap50": rec["best_score"],
        "script": "scripts/train_bundled.py",
    }
    model.meta["name"] = card["name"]
    model.meta["description"] = (
        f"2D nuclei ({', '.join(KINDS[a.kind])}), background / interior / boundary, trained on "
        "DSB2018 (CC0) by scripts/train_bundled.py"
    )
    model.meta["diameter_range"] = card["diameter_range"]
    model.meta["card"] = card
    path = ns.save_model(model, out / f"nuclei_{a.kind}.segnet")
    (out / f"nuclei_{a.kind}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"path": str(path), **card}, indent=2))


if __name__ == "__main__":
    main()
