"""The ``napari-segnet`` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import tifffile

    import napari_segnet as ns

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = ns.data.synthetic_nuclei((args.size, args.size), seed=args.seed)
    model = ns.build_model("unet", n_classes=3)
    print(f"model: UNet, halo {model.halo} px, divisor {model.divisor}")
    t0 = time.perf_counter()
    whole = ns.predict(image, model, device=args.device)
    t1 = time.perf_counter()
    tiled = ns.predict(
        image,
        model,
        tile_size=args.tile_size,
        device=args.device,
        progress=lambda d, n: print(f"\r  tiles {d}/{n}", end="", flush=True),
    )
    t2 = time.perf_counter()
    diff = float(np.abs(whole - tiled).max())
    print(
        f"\nauto tiling {t1 - t0:.2f} s, {args.tile_size}px tiles {t2 - t1:.2f} s, "
        f"max difference {diff:.2e}"
    )
    tifffile.imwrite(out / "image.tif", image)
    tifffile.imwrite(out / "ground_truth.tif", labels)
    tifffile.imwrite(out / "probabilities.tif", tiled, photometric="minisblack")
    print(f"wrote {out}/image.tif, ground_truth.tif, probabilities.tif")
    return 0 if diff < 1e-4 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-segnet",
        description="Train and run segmentation networks on microscopy images.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo",
        help="run the sample pipeline: synthetic nuclei through the tiled engine",
        description="Make synthetic nuclei, run an (untrained) UNet through the overlap-tile "
        "engine with and without small tiles, check they agree, and write TIFFs.",
    )
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--size", type=int, default=1024, help="image side in pixels")
    demo.add_argument("--tile-size", type=int, default=256, help="tile centre in pixels")
    demo.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ._version import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except Exception as e:
        from .errors import SegNetError

        if isinstance(e, (SegNetError, OSError)):
            print(f"napari-segnet: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
