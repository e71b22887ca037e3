"""Overlap-tile engine against an untiled forward pass and MONAI's sliding windows.

Run: python benchmarks/bench_tiling.py [--size 1536] [--device cpu] [--large 8192]

Prints seconds, megapixels per second and ratios (higher is better for "speed vs"),
all measured in this one run on the same model and image, then the peak resident
memory of segmenting a large zarr-backed image into a zarr store.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import napari_segnet as ns
from timing import best_time


def _model(device: str):
    torch.manual_seed(0)
    m = ns.build_model("unet", n_classes=3)  # the default 2D UNet: depth 4, width 32
    return m.to(device).eval()


def speed(size: int, device: str, repeats: int) -> None:
    from monai.inferers import sliding_window_inference

    model = _model(device)
    image, _ = ns.data.synthetic_nuclei((size, size), seed=0)
    dev = torch.device(device)
    amp = dev.type == "cuda"
    lo, hi = np.percentile(image, [1, 99.8])
    x = torch.from_numpy(((image - lo) / (hi - lo)).astype(np.float32))[None, None].to(dev)
    h = model.halo
    xp = torch.nn.functional.pad(x, (h, h, h, h), mode="reflect")

    def ctx():
        return (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if amp
            else torch.autocast("cpu", enabled=False)
        )

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def untiled():
        with torch.inference_mode(), ctx():
            torch.softmax(model(x).float(), 1).cpu()

    def untiled_cl():
        with torch.inference_mode(), ctx():
            torch.softmax(model_cl(x_cl).float(), 1).cpu()

    def untiled_padded():
        with torch.inference_mode(), ctx():
            torch.softmax(model(xp).float(), 1)[..., h:-h, h:-h].cpu()

    def monai(roi: int, channels_last: bool = False):
        net = model_cl if channels_last else model

        def predictor(t):
            return net(t.contiguous(memory_format=torch.channels_last) if channels_last else t)

        def run():
            with torch.inference_mode(), ctx():
                y = sliding_window_inference(
                    x,
                    roi_size=(roi, roi),
                    sw_batch_size=4,
                    predictor=predictor,
                    overlap=0.25,
                    mode="gaussian",
                    padding_mode="reflect",
                )
                torch.softmax(y.float(), 1).cpu()

        return run

    def engine():
        ns.predict(image, model, device=device)

    mpix = size * size / 1e6
    rows = [
        ("untiled forward (no border padding)", best_time(untiled, repeats)),
        ("untiled forward, channels-last", best_time(untiled_cl, repeats)),
        ("untiled forward, mirror-padded by the halo", best_time(untiled_padded, repeats)),
        ("MONAI sliding window roi 256, overlap 0.25, gaussian", best_time(monai(256), repeats)),
        ("MONAI sliding window roi 512, overlap 0.25, gaussian", best_time(monai(512), repeats)),
        ("MONAI roi 256, channels-last model", best_time(monai(256, True), repeats)),
        ("napari-segnet predict, defaults", best_time(engine, repeats)),
    ]
    t = dict(rows)
    ours = rows[-1][1]
    best_monai = min(t[k] for k in t if k.startswith("MONAI"))
    print(
        f"\n{size}x{size} image, default 2D UNet (depth 4, width 32, halo {model.halo}), "
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"best of {repeats}"
    )
    print("| method | seconds | MPix/s |\n|---|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.2f} | {mpix / s:.2f} |")
    print()
    print(f"speed vs best MONAI setting: {best_monai / ours:.2f}x (target >= 1.2 CPU, 1.5 GPU)")
    best_untiled = min(t[rows[0][0]], t[rows[1][0]])
    print(
        f"speed vs best untiled forward (no padding): {best_untiled / ours:.2f}x (target >= 0.85)"
    )
    print(f"speed vs untiled mirror-padded forward: {t[rows[2][0]] / ours:.2f}x")


def _peak_child(size: int, device: str, tile: int) -> None:
    import resource

    import zarr

    with tempfile.TemporaryDirectory() as d:
        z = zarr.open_array(
            f"{d}/in.zarr", mode="w", shape=(size, size), chunks=(1024, 1024), dtype="u2"
        )
        rng = np.random.default_rng(0)
        for i in range(0, size, 1024):
            z[i : i + 1024] = rng.integers(0, 4000, (min(1024, size - i), size), dtype=np.uint16)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        ns.segment(z, _model(device), output=f"{d}/out.zarr", tile_size=tile, device=device)
        dt = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": peak / 1024, "before_mib": base / 1024, "seconds": dt}))


def memory(size: int, device: str, tile: int) -> None:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-peak",
            str(size),
            "--device",
            device,
            "--tile",
            str(tile),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    full_prob = 3 * size * size * 4 / 2**20
    print(
        f"\nlarge image {size}x{size} uint16 (zarr) -> zarr store, tile centre {tile}: "
        f"peak RSS {r['peak_mib']:.0f} MiB ({r['before_mib']:.0f} MiB before the job), "
        f"{r['seconds']:.1f} s; the float32 probabilities alone would be {full_prob:.0f} MiB"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=1536)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--large", type=int, default=8192)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--child-peak", type=int, default=None)
    p.add_argument("--memory-only", action="store_true", help="skip the speed comparison")
    a = p.parse_args()
    if a.child_peak:
        _peak_child(a.child_peak, a.device, a.tile)
        return
    if not a.memory_only:
        speed(a.size, a.device, a.repeats)
    if a.large:
        memory(a.large, a.device, a.tile)


if __name__ == "__main__":
    main()
