"""Train the bundled 2D "nuclei" model on synthetic data, reproducibly.

Run (from the repository root):

    python scripts/train_bundled.py --minutes 40

Fixed seeds throughout; on a CPU the same command gives the same file. Writes
src/napari_segnet/models/bundled/nuclei.segnet and prints the scores that
docs/model_card_nuclei.md reports. Uses a GPU when one is present (then the run is
faster, and repeatable up to GPU arithmetic).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import napari_segnet as ns

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "napari_segnet" / "models" / "bundled" / "nuclei.segnet"


def dataset(n: int, seed: int, size: int = 384):
    """Synthetic nuclei of many looks: sizes 10-36 px, densities, bit depths, noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        diameter = float(np.exp(rng.uniform(np.log(10), np.log(36))))
        img, lab = ns.data.synthetic_nuclei(
            (size, size),
            seed=seed * 1000 + i,
            diameter=diameter,
            n_objects=int(rng.uniform(0.3, 1.2) * 0.33 * size * size / (np.pi * diameter**2 / 4)),
            touching=float(rng.uniform(0.2, 0.8)),
            irregular=float(rng.uniform(0.05, 0.2)),
            bit_depth=int(rng.choice([8, 16])),
            noise=float(np.exp(rng.uniform(np.log(0.3), np.log(2.0)))),
        )
        images.append(img)
        labels.append(lab)
    return images, labels


def evaluate(model, seed: int, n: int = 6) -> dict:
    images, labels = dataset(n, seed)
    aps = []
    for img, lab in zip(images, labels):
        res = ns.segment(img, model, device="cpu")
        aps.append(ns.average_precision(lab, res.instances, [0.5, 0.75, 0.9]))
    aps = np.array(aps)
    return {
        "AP@0.5": float(aps[:, 0].mean()),
        "AP@0.75": float(aps[:, 1].mean()),
        "AP@0.9": float(aps[:, 2].mean()),
        "images": n,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=40.0)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    images, labels = dataset(a.images, seed=1)
    t = time.perf_counter()

    def progress(u):
        if u.kind == "epoch":
            print(
                f"epoch {u.epoch} step {u.step} loss {u.loss:.4f} val AP@0.5 {u.score} "
                f"({u.elapsed:.0f} s)",
                flush=True,
            )

    model = ns.train(
        images,
        labels,
        model="unet",
        target="instances",
        model_options={"depth": 4, "width": 16},
        max_time=a.minutes * 60,
        seed=0,
        patch_size=160,
        batch_size=8,
        lr=3e-3,
        validation=0.15,
        progress=progress,
    )
    model.meta["name"] = "nuclei"
    # Trained on nuclei of 10-36 px; the middle of that range (geometric mean) is the size
    # segment(diameter=...) rescales to. The median over training objects would favour the
    # many small nuclei of the dense images.
    model.meta["diameter"] = float(np.sqrt(10 * 36))
    model.meta["diameter_range"] = [10.0, 36.0]
    model.meta["description"] = (
        "2D fluorescence nuclei (DAPI/Hoechst-like), background / interior / boundary, "
        "trained on synthetic images by scripts/train_bundled.py"
    )
    # Pick the instance seed threshold on fresh synthetic images (not the test set).
    best = (0.0, 0.5)
    for th in (0.5, 0.6, 0.7):
        model.meta["instance_options"] = {"interior_threshold": th}
        best = max(best, (evaluate(model, seed=2, n=4)["AP@0.5"], th))
    model.meta["instance_options"] = {"interior_threshold": best[1]}
    scores = evaluate(model, seed=3)
    model.meta["scores"] = {"synthetic_test": scores}
    path = ns.save_model(model, a.out)
    print(
        json.dumps(
            {
                "path": str(path),
                "seconds": round(time.perf_counter() - t),
                "steps": model.meta["training"]["steps"],
                "diameter": model.meta["diameter"],
                "interior_threshold": best[1],
                "scores": scores,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
