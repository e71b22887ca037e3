"""Time-lapse ids: how many objects keep their id from frame to frame, and linking speed.

On synthetic nuclei moving ``--step`` px per frame (``ns.data.synthetic_timelapse``):
the ground truth with each frame's ids shuffled, then relinked; and the bundled
``nuclei`` model through ``segment(..., link_time=True)``.

Run: python benchmarks/bench_tracking.py [--frames 5] [--size 256] [--step 3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import napari_segnet as ns

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.test_tracking import _shuffle, kept_ids  # the tests' own measure


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--frames", type=int, default=5)
    a.add_argument("--size", type=int, default=256)
    a.add_argument("--step", type=float, default=3.0)
    a.add_argument("--seeds", type=int, default=3)
    a.add_argument("--device", default="cpu")
    args = a.parse_args()
    model = ns.load_model("nuclei")
    for seed in range(args.seeds):
        images, gt = ns.data.synthetic_timelapse(
            args.frames, (args.size, args.size), seed=seed, step=args.step
        )
        shuffled = _shuffle(gt, seed + 1)
        t = time.perf_counter()
        relinked = ns.link_over_time(shuffled)
        dt = time.perf_counter() - t
        gt_frac, gt_n = kept_ids(gt, relinked)
        res = ns.segment(images, model, axes="TYX", device=args.device, link_time=True)
        seg_frac, seg_n = kept_ids(gt, np.asarray(res.instances))
        print(
            f"seed {seed}: ground truth relinked {100 * gt_frac:.1f}% of {gt_n} "
            f"({dt:.2f} s for {args.frames} frames); segment {100 * seg_frac:.1f}% of {seg_n}"
        )


if __name__ == "__main__":
    main()
