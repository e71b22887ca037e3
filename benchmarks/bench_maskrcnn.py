"""UNet instances vs Mask R-CNN: the same CPU training time, AP@0.5/0.75, speed, memory.

Both methods train for ``--seconds`` from scratch on the same images and are scored on
held-out images: synthetic nuclei (touching and overlapping), and the fluorescence
images of DSB2018 (../shared/data/dsb2018): trained on images of the ``train`` rows of
benchmarks/dsb2018_split.csv and scored on the ``val`` rows (the split by image that
bench_accuracy.py uses; the held-out test share is not touched). Each run is a fresh
process, so its peak resident memory is its own. Prints one markdown table
(docs/benchmarks.md, docs/maskrcnn.md); with ``--out`` also writes results.json and
the first held-out image's predictions there (benchmarks/plot_maskrcnn.py draws the
figure from them).

Run: python benchmarks/bench_maskrcnn.py [--seconds 300] [--dsb PATH] [--limit 40] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np
import tifffile

DSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"


def synthetic(n: int, seed: int) -> tuple[list, list]:
    import napari_segnet as ns

    pairs = [
        ns.data.synthetic_nuclei((192, 192), seed=seed + i, diameter=16, touching=0.7)
        for i in range(n)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def dsb(root: Path, split: str, limit: int) -> tuple[list, list]:
    with open(Path(__file__).with_name("dsb2018_split.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows if r["split"] == split and r["modality"] == "fluorescence"]
    images, labels = [], []
    for i in ids[:limit]:
        img = tifffile.imread(root / "images" / f"{i}.tif")
        images.append(img if img.ndim == 2 else img[..., 0])
        labels.append(tifffile.imread(root / "labels" / f"{i}.tif").astype(np.int32))
    return images, labels


def load(name: str, root: Path, limit: int):
    if name == "synthetic":
        return synthetic(12, 0), synthetic(4, 100)
    return dsb(root, "train", limit), dsb(root, "val", limit)


def run_one(name: str, arch: str, seconds: float, root: str, limit: int) -> dict:
    """Train one method on one data set and score it (in its own process)."""
    import torch

    import napari_segnet as ns

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    train, test = load(name, Path(root), limit)
    t0 = time.perf_counter()
    model = ns.train(
        train[0],
        train[1],
        model=arch,
        max_time=seconds,
        device="cpu",
        pretrained=None,
        validation=0.2,
    )
    trained_s = time.perf_counter() - t0
    aps, pixels, secs, first = [], 0, 0.0, None
    for im, lab in zip(*test):
        t = time.perf_counter()
        res = ns.segment(im, model, device="cpu", diameter=None)
        secs += time.perf_counter() - t
        pixels += lab.size
        aps.append(ns.average_precision(lab, res.instances, [0.5, 0.75]))
        if first is None:
            first = np.asarray(res.instances)
    ap = np.mean(aps, axis=0)
    return {
        "data": name,
        "method": arch,
        "train_s": round(trained_s, 1),
        "steps": int(model.meta.get("training", {}).get("steps", 0) or 0),
        "ap50": float(ap[0]),
        "ap75": float(ap[1]),
        "mpix_s": pixels / 1e6 / secs,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "test_images": len(test[0]),
        "first": first,
        "first_image": np.asarray(test[0][0]),
        "first_labels": np.asarray(test[1][0]),
    }


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--seconds", type=float, default=300)
    a.add_argument("--dsb", type=Path, default=DSB)
    a.add_argument("--limit", type=int, default=40)
    a.add_argument("--out", type=Path, default=None)
    args = a.parse_args()
    sets = ["synthetic"] + (["DSB2018 fluorescence"] if (args.dsb / "images").is_dir() else [])
    print("| data | method | train s | steps | AP@0.5 | AP@0.75 | MPix/s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|", flush=True)
    ctx = mp.get_context("spawn")
    results = []
    for name in sets:
        for arch in ("unet", "maskrcnn"):
            with ctx.Pool(1) as pool:
                r = pool.apply(run_one, (name, arch, args.seconds, str(args.dsb), args.limit))
            results.append(r)
            print(
                f"| {name} | {arch} | {r['train_s']:.0f} | {r['steps']} | {r['ap50']:.3f} "
                f"| {r['ap75']:.3f} | {r['mpix_s']:.3f} | {r['peak_rss_mib']:.0f} |",
                flush=True,
            )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for r in results:
            key = f"{r['data'].split()[0]}_{r['method']}"
            arrays[f"{key}_pred"] = r.pop("first")
            arrays[f"{r['data'].split()[0]}_image"] = r.pop("first_image")
            arrays[f"{r['data'].split()[0]}_labels"] = r.pop("first_labels")
        np.savez_compressed(args.out / "first_images.npz", **arrays)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
