"""Training speed (patches per second) and the score reached after 1, 2 and 4 minutes.

Run: python benchmarks/bench_training.py [--device cpu] [--minutes 1 2 4]
        [--pretrained auto|none] [--domain same|shifted] [--seed 0]
        [--image IMAGE.tif --labels LABELS.tif]

Trains ``ns.train`` with its defaults on the left half of a synthetic nuclei image and
scores instance AP@0.5 on the right half (never seen), as a user would with one
annotated image. By default instance training starts from the bundled nuclei model;
``--pretrained none`` trains from scratch. The bundled model was trained on the same
generator, so ``--domain shifted`` changes the look (larger, blurred, dark-on-bright
nuclei with gamma) to show fine-tuning on data unlike its training set.
``--image``/``--labels`` take a real annotated 2D image (any file tifffile reads) in
place of the synthetic one: train on its left half, score the right half.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage as ndi

import napari_segnet as ns
from napari_segnet.training.loop import TRAIN_DEFAULTS, weighted_loss


def patches_per_second(device: str, batch: int = 8, patch: int = 128, steps: int = 10) -> float:
    # As the training loop runs it: channels-last memory for 2D.
    model = ns.build_model("unet", n_classes=3, **TRAIN_DEFAULTS["unet"]).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 1, patch, patch, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch, patch, patch), device=device)
    w = torch.ones(batch, patch, patch, device=device)
    for i in range(steps + 2):
        if i == 2:
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        loss = weighted_loss(model(x), y, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def shifted(image: np.ndarray) -> np.ndarray:
    """Another look: blurred, inverted (dark nuclei on a bright background), gamma 0.6."""
    x = ndi.gaussian_filter(image.astype(np.float32), 1.5)
    x = (x - x.min()) / (x.max() - x.min())
    return ((1.0 - x) ** 0.6 * 4000).astype(np.uint16)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 4])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--pretrained", choices=["auto", "none"], default="auto")
    p.add_argument("--domain", choices=["same", "shifted"], default="same")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", help="a real 2D image instead of the synthetic one")
    p.add_argument("--labels", help="its instance labels")
    a = p.parse_args()
    if (a.image is None) != (a.labels is None):
        p.error("--image and --labels go together")
    print(f"device {a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    pps = patches_per_second(a.device)
    print(
        f"training throughput: {pps:.1f} patches/s (128x128, batch 8, "
        f"UNet depth {TRAIN_DEFAULTS['unet']['depth']} width {TRAIN_DEFAULTS['unet']['width']})"
    )
    if a.image is not None:
        import tifffile

        img, lab = tifffile.imread(a.image), tifffile.imread(a.labels)
        a.domain = a.image
    elif a.domain == "same":
        img, lab = ns.data.synthetic_nuclei((a.size, a.size), seed=11, diameter=18)
    else:
        img, lab = ns.data.synthetic_nuclei((a.size, a.size), seed=12, diameter=26)
        img = shifted(img)
    pretrained = None if a.pretrained == "none" else "auto"
    print(f"domain {a.domain}, pretrained {a.pretrained}")
    half = img.shape[1] // 2
    zero = ns.segment(img[:, half:], ns.load_model("nuclei"), device=a.device).instances
    ap0 = ns.average_precision(lab[:, half:], zero, 0.5)
    print(f"bundled nuclei model without training: AP@0.5 {ap0:.3f}")
    print(
        "| training time | steps | AP@0.5 right half | AP@0.75 | thresholds (seed / foreground) |"
        "\n|---|---:|---:|---:|---|"
    )
    for minutes in a.minutes:
        model = ns.train(
            img[:, :half],
            lab[:, :half],
            target="instances",
            max_time=minutes * 60,
            device=a.device,
            seed=a.seed,
            pretrained=pretrained,
        )
        res = ns.segment(img[:, half:], model, device=a.device)
        gt = lab[:, half:]
        ap = ns.average_precision(gt, res.instances, [0.5, 0.75])
        opts = model.meta.get("instance_options") or {}
        print(
            f"| {minutes:g} min | {model.meta['training']['steps']} | {ap[0]:.3f} | {ap[1]:.3f} | "
            f"{opts.get('interior_threshold', 0.5)} / {opts.get('foreground_threshold', 0.5)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
