"""The figure of docs/maskrcnn.md from bench_maskrcnn.py's ``--out`` folder.

Run: python benchmarks/plot_maskrcnn.py OUT_DIR docs/figures/maskrcnn_vs_unet.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries


def main(out: Path, png: Path) -> None:
    results = json.loads((out / "results.json").read_text())
    arrays = np.load(out / "first_images.npz")
    sets = list(dict.fromkeys(r["data"] for r in results))
    fig, axes = plt.subplots(len(sets), 4, figsize=(13, 3.3 * len(sets)), squeeze=False)
    for row, name in zip(axes, sets):
        key = name.split()[0]
        rs = [r for r in results if r["data"] == name]
        x = np.arange(2)
        for i, r in enumerate(rs):
            row[0].bar(x + 0.38 * i, [r["ap50"], r["ap75"]], 0.36, label=r["method"])
        row[0].set_xticks(x + 0.19, ["AP@0.5", "AP@0.75"])
        row[0].set_ylim(0, 1)
        row[0].set_title(f"{name}: {rs[0]['train_s']:.0f} s training each")
        row[0].legend()
        image = arrays[f"{key}_image"].astype(np.float32)
        lo, hi = np.percentile(image, (1, 99.8))
        shown = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
        panels = [("ground truth", arrays[f"{key}_labels"])]
        panels += [(r["method"], arrays[f"{key}_{r['method']}_pred"]) for r in rs]
        for ax, (title, lab) in zip(row[1:], panels):
            rgb = np.stack([shown] * 3, -1)
            rgb[find_boundaries(lab, mode="inner")] = (1.0, 0.3, 0.1)
            ax.imshow(rgb)
            ax.set_title(f"{title} ({len(np.unique(lab)) - 1} objects)")
            ax.axis("off")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
