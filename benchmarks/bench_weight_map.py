"""Boundary weight map: windowed (napari-segnet) against the naive per-object version.

Run: python benchmarks/bench_weight_map.py [--size 2048] [--objects 2000]

The naive version runs one full-image distance transform per object, as most UNet
re-implementations do; it is timed on the same labels in this run (or on a crop of
them with --naive-rows, then scaled by the number of pixels, when it would take too long).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

import napari_segnet as ns


def naive_weight_map(labels, w0=10.0, sigma=5.0, class_balance=True):
    """One distance transform per object over the whole image, then the two smallest."""
    from napari_segnet.training.weights import class_balance_weights

    ids = [i for i in np.unique(labels) if i != 0]
    w = class_balance_weights(labels) if class_balance else np.ones(labels.shape, np.float32)
    if len(ids) < 2:
        return w
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for i in ids:  # streaming the two minima keeps memory at a few images
        d = ndi.distance_transform_edt(labels != i)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    bg = labels == 0
    w[bg] += (w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))[bg]
    return w


def make_labels(size: int, n: int, seed: int = 0) -> np.ndarray:
    """Touching, densely packed blobs: Voronoi cells of random seeds, eroded a little."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), np.int32)
    pts = rng.integers(0, size, (n, 2))
    seeds[pts[:, 0], pts[:, 1]] = np.arange(1, n + 1)
    _, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    cells = seeds[tuple(idx)]
    dist = ndi.distance_transform_edt(seeds == 0)
    cells[dist > np.sqrt(size * size / n) * 0.45] = 0  # leave background between some
    return cells


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument(
        "--naive-rows",
        type=int,
        default=256,
        help="rows of the image the naive version runs on (0: the whole image)",
    )
    a = p.parse_args()
    labels = make_labels(a.size, a.objects)
    n_obj = len(np.unique(labels)) - 1
    t = time.perf_counter()
    ns.boundary_weight_map(labels)
    t_fast = time.perf_counter() - t

    rows = a.naive_rows or a.size
    crop = labels[:rows]
    crop_ids = len(np.unique(crop)) - 1
    t = time.perf_counter()
    naive = naive_weight_map(crop)
    t_crop = time.perf_counter() - t
    # Naive cost is objects x pixels: scale by both to the full image.
    t_naive = t_crop * (n_obj / crop_ids) * (labels.size / crop.size) if rows < a.size else t_crop
    err = float(np.abs(ns.boundary_weight_map(crop) - naive).max())
    print(f"{a.size}x{a.size} labels, {n_obj} objects")
    print("| method | seconds |\n|---|---:|")
    kind = "measured" if rows >= a.size else f"extrapolated from {rows} rows ({crop_ids} objects)"
    print(f"| naive, one EDT per object ({kind}) | {t_naive:.1f} |")
    print(f"| napari-segnet boundary_weight_map | {t_fast:.3f} |")
    print(
        f"speed-up: {t_naive / t_fast:.0f}x; target <= 1 s: {'met' if t_fast <= 1 else 'NOT met'}"
    )
    print(f"max |fast - naive| on the {rows}-row crop: {err:.2e} (limit 0.01)")


if __name__ == "__main__":
    main()
