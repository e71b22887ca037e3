"""Explainer figures for the documentation, computed with the package itself.

Run: pip install matplotlib; python scripts/figures.py  (writes docs/figures/*.png)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

import napari_segnet as ns

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"


def save(fig, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print("wrote", OUT / name)


def tiling() -> None:
    image, _ = ns.data.synthetic_nuclei((192, 256), seed=3)
    border, halo, core = 32, 40, 96
    padded = np.pad(image, border, mode="reflect")
    fig, ax = plt.subplots(figsize=(7.5, 5.6))
    ax.imshow(padded, cmap="gray")
    h, w = image.shape
    ax.add_patch(Rectangle((border - 0.5, border - 0.5), w, h, fill=False, ec="yellow", lw=2))
    ax.text(border + 4, border + 12, "image", color="yellow")
    ax.text(4, 12, "mirrored border", color="yellow")
    # A tile: centre (written) plus halo (read, context only).
    y0, x0 = border + 64, border + 96
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), core, core, fc=(0, 1, 0, 0.25), ec="lime", lw=2))
    ax.add_patch(
        Rectangle(
            (x0 - halo - 0.5, y0 - halo - 0.5),
            core + 2 * halo,
            core + 2 * halo,
            fill=False,
            ec="cyan",
            lw=2,
            ls="--",
        )
    )
    ax.text(x0 + 4, y0 + 14, "centre\n(written once)", color="lime")
    ax.text(x0 - halo + 3, y0 - halo + 12, "halo = receptive field", color="cyan")
    ax.set_title("Overlap-tile: each tile reads centre + halo, writes only its centre")
    ax.axis("off")
    save(fig, "tiling.png")


def upsampling() -> None:
    torch.manual_seed(0)
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    big = torch.rand(1, 1, 8, 8)
    _, idx = F.max_pool2d(big, 2, return_indices=True)
    kernel = torch.tensor([[[[1.0, 0.5], [0.5, 0.25]]]])
    nails = torch.zeros(1, 1, 8, 8)
    nails[..., ::2, ::2] = x
    outs = {
        "input (4×4)": x,
        "nearest": F.interpolate(x, scale_factor=2, mode="nearest"),
        "bilinear": F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
        "bed of nails": nails,
        "max-unpooling\n(encoder's indices)": F.max_unpool2d(x, idx, 2),
        "transposed conv\n(learned 2×2 kernel)": F.conv_transpose2d(x, kernel, stride=2),
    }
    fig, axes = plt.subplots(1, len(outs), figsize=(15, 2.9))
    for ax, (name, y) in zip(axes, outs.items()):
        ax.imshow(y[0, 0].numpy(), cmap="viridis", vmin=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("The five upsampling kinds of the UNet decoder, 4×4 → 8×8 (before the conv)")
    save(fig, "upsampling.png")


def dilated() -> None:
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    size = 19
    c = size // 2
    for ax, rate in zip(axes[:3], (1, 2, 4)):
        grid = np.zeros((size, size))
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grid[c + dy * rate, c + dx * rate] = 1
        ax.imshow(grid, cmap="Blues", vmin=0, vmax=1.3)
        ax.set_title(f"3×3 kernel, dilation {rate}\nsees {2 * rate + 1}×{2 * rate + 1} px")
        ax.set_xticks([])
        ax.set_yticks([])
    # ASPP: parallel branches at several rates over the same feature map.
    ax = axes[3]
    grid = np.zeros((size, size))
    for value, rate in ((1, 2), (2, 4), (3, 8)):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = c + dy * rate, c + dx * rate
                if 0 <= y < size and 0 <= x < size and grid[y, x] == 0:
                    grid[y, x] = value
    ax.imshow(np.ma.masked_equal(grid, 0), cmap="viridis", vmin=0, vmax=3)
    ax.set_title("ASPP: rates 2, 4, 8 in parallel\n(+1×1 and pooled branches)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle("Dilated convolutions keep resolution while the receptive field grows")
    save(fig, "dilated.png")


def weight_map() -> None:
    image, labels = ns.data.synthetic_nuclei((160, 200), seed=4, diameter=22)
    w = ns.boundary_weight_map(labels, w0=10.0, sigma=5.0)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(labels % 20 + (labels > 0), cmap="tab20", interpolation="nearest")
    axes[1].set_title("instance labels")
    im = axes[2].imshow(w, cmap="magma")
    axes[2].set_title("w = w_c + w0·exp(-(d1+d2)²/2σ²)", fontsize=10)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("The gaps between touching nuclei get the largest weights (w0 = 10, σ = 5)")
    save(fig, "weight_map.png")


def crf() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_crf import scene

    img, coarse, gt = scene((192, 256), seed=2)
    refined = ns.refine_crf(img, coarse)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].imshow(img)
    axes[0].set_title("RGB image")
    before = ns.mean_iou(gt, coarse.argmax(0), 4)
    after = ns.mean_iou(gt, refined.argmax(0), 4)
    axes[1].imshow(coarse.argmax(0), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[1].set_title(f"coarse prediction (mIoU {before:.3f})")
    axes[2].imshow(refined.argmax(0), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[2].set_title(f"after refine_crf (mIoU {after:.3f})")
    for ax in axes:
        ax.axis("off")
    save(fig, "crf.png")


def outputs() -> None:
    image, _ = ns.data.synthetic_nuclei((256, 320), seed=21, diameter=20)
    res = ns.segment(image, ns.load_model("nuclei"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(res.probabilities[1], cmap="viridis")
    axes[1].set_title("probability of 'interior'")
    axes[2].imshow(res.semantic, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[2].set_title("semantic: bg / interior / boundary")
    inst = res.instances
    shown = np.ma.masked_equal((inst * 7919) % 255 + 1, 1)
    axes[3].imshow(np.ma.masked_where(inst == 0, shown), cmap="nipy_spectral")
    axes[3].set_title(f"instances: {inst.max()} objects")
    for ax in axes:
        ax.axis("off")
    save(fig, "outputs.png")


def architecture() -> None:
    """The packages, and the path an image takes from a napari layer to labels."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11.5, 6.2))
    ax.set_xlim(0, 112)
    ax.set_ylim(0, 64)
    ax.axis("off")
    packages = {
        # name: (x, y, w, h, colour, modules)
        "_napari/": (2, 50, 106, 12, "#e8eaf6", "panels · layers.py (layers, slice) · jobs"),
        "segment.py": (38, 38, 34, 8, "#fff3e0", "the pipeline, top to bottom"),
        "engine/": (2, 4, 35, 31, "#e3f2fd", ""),
        "postprocess/": (41, 16, 33, 19, "#e8f5e9", ""),
        "io/": (78, 16, 30, 19, "#fce4ec", ""),
        "models/": (41, 4, 33, 9, "#f3e5f5", "UNet, DeConvNet, dilated · registry"),
        "training/": (78, 4, 30, 9, "#fffde7", "train in steps · targets · weights"),
    }
    for name, (x, y, w, h, colour, text) in packages.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.4", fc=colour, ec="0.4"))
        ax.text(x + 1, y + h - 2.2, name, weight="bold", fontsize=10, va="center")
        if text:
            ax.text(x + 1, y + h - 5.2, text, fontsize=8, va="center")
    stages = [
        ("engine/", 2, 30.5, "1 axes.py: layout (TZCYX)"),
        ("engine/", 2, 27, "2 rescale.py: object size"),
        ("engine/", 2, 23.5, "3 plan.py: normalise, tiles"),
        ("engine/", 2, 20, "   geometry.py · memory.py"),
        ("engine/", 2, 16.5, "4 runner.py: batches on a device"),
        ("engine/", 2, 13, "5 sinks.py: tile centres -> arrays"),
        ("engine/", 2, 9.5, "   dask_engine.py: the same, per block"),
        ("postprocess/", 41, 30.5, "6 results.py: CRF, classes,"),
        ("postprocess/", 41, 27, "   instances (seeded watershed)"),
        ("postprocess/", 41, 23.5, "   crf.py · lattice.py · gaussian.py"),
        ("postprocess/", 41, 20, "   instances.py (blockwise too)"),
        ("io/", 78, 30.5, "model_files.py (safetensors)"),
        ("io/", 78, 27, "bundled.py (load_model)"),
        ("io/", 78, 23.5, "7 zarr_output.py: stores"),
        ("io/", 78, 20, "images.py (CLI reading)"),
    ]
    for _, x, y, text in stages:
        ax.text(x + 1.2, y, text, fontsize=8, va="center", family="monospace")

    def arrow(a, b, text=""):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, color="C3", lw=1.6))
        if text:
            ax.text((a[0] + b[0]) / 2 + 1, (a[1] + b[1]) / 2, text, fontsize=8, color="C3")

    arrow((30, 49.5), (42, 46.6), "layer data")
    arrow((42, 37.6), (22, 35.6), "image")
    arrow((37.5, 8), (41, 12), "")
    arrow((37.5, 8.5), (41, 18), "probabilities")
    arrow((74.5, 22), (78, 22), "")
    arrow((58, 35.6), (58, 37.6), "")
    arrow((66, 46.6), (76, 49.5), "labels layers")
    ax.set_title("napari-segnet: packages, and an image's way from layer to labels", fontsize=11)
    save(fig, "architecture.png")


if __name__ == "__main__":
    architecture()
    tiling()
    upsampling()
    dilated()
    weight_map()
    crf()
    outputs()
