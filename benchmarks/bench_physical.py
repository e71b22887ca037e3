"""The same objects at two pixel sizes: does ``segment(spacing=, physical_diameter=)`` agree?

Run: python benchmarks/bench_physical.py [--seeds 0,1,2,3,4,5,6,7] [--size 256]

Each seed makes ``ns.data.synthetic_nuclei`` (nuclei 24 px across, noise 0.3, 20 % touching)
taken as imaged at 0.5 µm per pixel, and the same image averaged over 2 x 2 pixels as imaged
at 1 µm. The bundled ``nuclei`` model segments both with ``physical_diameter=12`` (µm) and
each one's ``spacing``, and, for comparison, the 1 µm image without rescaling
(``diameter=None``). The 1 µm labels are repeated 2 x 2 onto the 0.5 µm grid and compared with
the 0.5 µm labels by AP@0.5 (``ns.average_precision``). Prints one line per seed and the mean.
"""

from __future__ import annotations

import argparse

import numpy as np
from skimage.transform import downscale_local_mean

import napari_segnet as ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    model = ns.load_model("nuclei")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        img, _ = ns.data.synthetic_nuclei(
            (args.size, args.size), seed=seed, diameter=24, noise=0.3, touching=0.2
        )
        fine = img.astype(np.float32)
        coarse = downscale_local_mean(fine, (2, 2)).astype(np.float32)
        a = ns.segment(fine, model, spacing=0.5, physical_diameter=12.0).instances
        b = ns.segment(coarse, model, spacing=1.0, physical_diameter=12.0).instances
        c = ns.segment(coarse, model, diameter=None).instances

        def up(lab):
            return np.repeat(np.repeat(lab, 2, 0), 2, 1)

        row = (ns.average_precision(a, up(b)), ns.average_precision(a, up(c)))
        rows.append(row)
        print(f"seed {seed}: AP@0.5 rescaled {row[0]:.3f}, not rescaled {row[1]:.3f}")
    mean = np.mean(rows, axis=0)
    print(f"mean over {len(rows)} seeds: rescaled {mean[0]:.3f}, not rescaled {mean[1]:.3f}")


if __name__ == "__main__":
    main()
