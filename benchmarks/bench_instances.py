"""Instance labelling speed: seconds per megapixel, in memory and block by block.

Run: python benchmarks/bench_instances.py [--size 4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

import napari_segnet as ns
from napari_segnet.training.targets import instance_classes


def probabilities(size: int, seed: int = 0) -> np.ndarray:
    """Smooth three-class probabilities of touching nuclei (ideal maps, blurred)."""
    _, lab = ns.data.synthetic_nuclei((size, size), seed=seed, diameter=18)
    cls = instance_classes(lab)
    p = np.stack([ndi.gaussian_filter((cls == c).astype(np.float32), 1.0) for c in range(3)])
    return p / p.sum(0, keepdims=True)


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--size", type=int, default=4096)
    a.add_argument("--block", type=int, default=1024)
    a.add_argument("--halo", type=int, default=64)
    args = a.parse_args()
    p = probabilities(args.size)
    mpix = args.size**2 / 1e6
    t = time.perf_counter()
    mem = ns.label_instances(p)
    t_mem = time.perf_counter() - t
    t = time.perf_counter()
    blk = ns.label_instances_blockwise(p, block_size=args.block, halo=args.halo)
    t_blk = time.perf_counter() - t
    print(
        f"{args.size}x{args.size} ({mpix:.1f} MPix), {mem.max()} objects in memory, "
        f"{blk.max()} blockwise (block {args.block}, halo {args.halo})"
    )
    print("| method | seconds | s/MPix |\n|---|---:|---:|")
    print(f"| label_instances (in memory) | {t_mem:.2f} | {t_mem / mpix:.3f} |")
    print(f"| label_instances_blockwise | {t_blk:.2f} | {t_blk / mpix:.3f} |")


if __name__ == "__main__":
    main()
