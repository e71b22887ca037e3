"""Training throughput (patches per second) on each device, as ``ns.train`` runs a step.

Run: python benchmarks/bench_train_speed.py [--devices cuda,cpu] [--steps 20] [--json OUT]

One step as the training loop takes it: the default training UNet, channels-last
memory in 2D, the weighted loss, AdamW; bfloat16 autocast on CUDA as ``ns.train`` uses
it there (``precision=auto``), and float32 for comparison. ``bench_training.py`` prints
the float32 figure only (its ``patches_per_second`` has no autocast) before it trains
for minutes; this script measures throughput alone, so that GPU and CPU fit in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

import napari_segnet as ns
from napari_segnet.training.loop import TRAIN_DEFAULTS, weighted_loss


def throughput(device: str, precision: str, batch: int, patch: int, steps: int) -> float:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = ns.build_model("unet", n_classes=3, **TRAIN_DEFAULTS["unet"]).to(dev)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 1, patch, patch, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch, patch, patch), device=dev)
    w = torch.ones(batch, patch, patch, device=dev)
    ctx = (
        contextlib.nullcontext()
        if precision == "float32"
        else torch.autocast(dev.type, dtype=getattr(torch, precision))
    )

    def step():
        with ctx:
            loss = weighted_loss(model(x), y, w)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    default = "cuda,cpu" if torch.cuda.is_available() else "cpu"
    p.add_argument("--devices", default=default)
    p.add_argument("--steps", type=int, default=20, help="timed steps on an accelerator")
    p.add_argument("--cpu-steps", type=int, default=5, help="timed steps on the CPU")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    cfg = TRAIN_DEFAULTS["unet"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; UNet depth "
        f"{cfg['depth']} width {cfg['width']}, {a.patch}x{a.patch} patches, batch {a.batch}"
    )
    print("| device | precision | timed steps | patches/s |\n|---|---|---:|---:|")
    rows = []
    for device in a.devices.split(","):
        precs = ["float32"] if device == "cpu" else ["float32", "bfloat16"]
        steps = a.cpu_steps if device == "cpu" else a.steps
        for prec in precs:
            r = {"device": device, "precision": prec, "steps": steps}
            try:
                r["patches_per_s"] = throughput(device, prec, a.batch, a.patch, steps)
                print(f"| {device} | {prec} | {steps} | {r['patches_per_s']:.1f} |", flush=True)
            except Exception as e:
                r["error"] = f"{type(e).__name__}: {e}"
                print(f"| {device} | {prec} | {steps} | {r['error']} |", flush=True)
            rows.append(r)
    cpu = [r["patches_per_s"] for r in rows if r["device"] == "cpu" and "patches_per_s" in r]
    for r in rows:
        if r["device"] != "cpu" and "patches_per_s" in r and cpu:
            print(
                f"{r['device']} {r['precision']} / cpu float32: {r['patches_per_s'] / cpu[0]:.1f}x"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
