"""UNet instances vs Mask R-CNN: the same CPU training time, AP@0.5/0.75, speed, memory.

Both methods train for ``--seconds`` from scratch on the same images and are scored on
held-out images: synthetic nuclei (touching and overlapping), and with ``--dsb`` the
fluorescence images of the DSB2018 validation split in ../shared/data/dsb2018
(benchmarks/dsb2018_split.csv). Prints one markdown table (docs/benchmarks.md).

Run: python benchmarks/bench_maskrcnn.py [--seconds 300] [--dsb PATH]
"""

from __future__ import annotations

import argparse
import csv
import resource
import time
from pathlib import Path

import numpy as np
import tifffile

import napari_segnet as ns


def synthetic(n: int, seed: int) -> tuple[list, list]:
    pairs = [
        ns.data.synthetic_nuclei((192, 192), seed=seed + i, diameter=16, touching=0.7)
        for i in range(n)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def dsb(root: Path, split: str, limit: int) -> tuple[list, list]:
    with open(Path(__file__).with_name("dsb2018_split.csv")) as f:
        rows = list(csv.DictReader(f))
    ids = [r["id"] for r in rows if r["split"] == split and r["modality"] == "fluorescence"]
    images, labels = [], []
    for i in ids[:limit]:
        img = tifffile.imread(next((root / "images").glob(f"{i}.*")))
        images.append(img if img.ndim == 2 else img[..., 0])
        labels.append(tifffile.imread(next((root / "labels").glob(f"{i}.*"))).astype(np.int32))
    return images, labels


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(model, images, labels) -> tuple[np.ndarray, float]:
    """Mean AP at IoU 0.5 and 0.75, and megapixels per second of ``segment``."""
    aps, pixels, seconds = [], 0, 0.0
    for im, lab in zip(images, labels):
        t = time.perf_counter()
        res = ns.segment(im, model, device="cpu", diameter=None)
        seconds += time.perf_counter() - t
        pixels += lab.size
        aps.append(ns.average_precision(lab, res.instances, [0.5, 0.75]))
    return np.mean(aps, axis=0), pixels / 1e6 / seconds


def compare(name: str, train, test, seconds: float) -> list[str]:
    rows = []
    for arch in ("unet", "maskrcnn"):
        before = peak_rss_mib()
        model = ns.train(
            train[0],
            train[1],
            model=arch,
            max_time=seconds,
            device="cpu",
            pretrained=None,
            validation=0.2,
        )
        ap, speed = evaluate(model, *test)
        rows.append(
            f"| {name} | {arch} | {seconds:.0f} | {ap[0]:.3f} | {ap[1]:.3f} | {speed:.3f} "
            f"| {max(peak_rss_mib() - before, 0):.0f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--seconds", type=float, default=300)
    a.add_argument("--dsb", type=Path, default=None)
    a.add_argument("--limit", type=int, default=40)
    args = a.parse_args()
    print("| data | method | train s | AP@0.5 | AP@0.75 | MPix/s | peak RSS growth MiB |")
    print("|---|---|---|---|---|---|---|", flush=True)
    compare("synthetic", synthetic(12, 0), synthetic(4, 100), args.seconds)
    if args.dsb is not None:
        compare(
            "DSB2018 fluorescence",
            dsb(args.dsb, "train", args.limit),
            dsb(args.dsb, "val", args.limit),
            args.seconds,
        )


if __name__ == "__main__":
    main()
