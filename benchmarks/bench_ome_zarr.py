"""Blockwise OME-Zarr jobs: peak memory against image size, throughput, 1 vs 2 workers.

Run: python benchmarks/bench_ome_zarr.py [--quick]

Each job runs in a fresh process (so its peak resident memory is its own) on an
OME-Zarr image made chunk by chunk (never whole in memory): 2D images up to 8192² and
volumes up to 64×1024² (a 2D model slice by slice, and a small 3D model on a
smaller volume). The model is a small fast UNet (depth 2, width 8): the figures are
about the job's memory and overheads, not about a network's speed. Prints per job
the seconds, megapixels per second, seconds per block and the peak RSS above the
process's start (imports and model), then the ratio of 2 workers to 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_JOB = r"""
import json, resource, sys, time, psutil, torch
import napari_segnet as ns
torch.manual_seed(0)
dims, path, out, block, workers = sys.argv[1:6]
dims, block, workers = int(dims), int(block), int(workers)
model = ns.build_model("unet", n_classes=3, dims=dims, depth=2, width=8).eval()
model.meta["target"] = "instances"
client = None
if workers:
    from distributed import Client
    from napari_segnet.cluster import local_cluster
    client = Client(local_cluster(n_workers=workers, threads_per_worker=1))
else:
    torch.set_num_threads(1)
base = psutil.Process().memory_info().rss
t = time.perf_counter()
res = ns.segment_ome_zarr(path, model, out, block_size=block, label_halo=32 if dims == 2 else 16,
                          client=client)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": dt, "blocks": res.n_blocks, "base": base, "peak": peak}))
"""


def make_image(path: Path, shape: tuple[int, ...], chunk: int) -> None:
    """A uint16 OME-Zarr image of synthetic nuclei, written chunk by chunk."""
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    import napari_segnet as ns

    tile, _ = ns.data.synthetic_nuclei((1024, 1024), seed=0)
    axes = "zyx"[-len(shape) :]
    g = zarr.open_group(str(path), mode="w")
    chunks = (1,) * (len(shape) - 2) + (chunk, chunk)
    arr = g.create_array("0", shape=shape, chunks=chunks, dtype=np.uint16)
    for z in np.ndindex(*shape[:-2]):
        for y in range(0, shape[-2], 1024):
            for x in range(0, shape[-1], 1024):
                h, w = min(1024, shape[-2] - y), min(1024, shape[-1] - x)
                arr[(*z, slice(y, y + h), slice(x, x + w))] = np.roll(
                    tile, z[0] * 37 if z else 0, 0
                )[:h, :w]
    ds = [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(shape)}]}
    ]
    write_multiscales_metadata(g, ds, axes=list(axes))


def run(dims: int, path: Path, block: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.zarr"
        args = [
            sys.executable,
            "-c",
            _JOB,
            str(dims),
            str(path),
            str(out),
            str(block),
            str(workers),
        ]
        res = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the smaller sizes only")
    a = parser.parse_args()
    jobs = [
        ("2D", 2, (2048, 2048), 1024),
        ("2D", 2, (4096, 4096), 1024),
        ("2D", 2, (8192, 8192), 1024),
        ("3D, 2D model", 2, (16, 1024, 1024), 1024),
        ("3D, 2D model", 2, (64, 1024, 1024), 1024),
        ("3D, 3D model", 3, (32, 256, 256), 64),
        ("3D, 3D model", 3, (64, 512, 512), 64),
    ]
    if a.quick:
        jobs = [j for j in jobs if np.prod(j[2]) <= 2**24]
    print(
        f"{'job':14} {'shape':>16} {'blocks':>6} {'s':>7} {'Mpx/s':>6} {'s/block':>7} "
        f"{'peak RSS above start':>21}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, dims, shape, block in jobs:
            p = Path(tmp) / f"img{len(rows)}.ome.zarr"
            make_image(p, shape, 256)
            r = run(dims, p, block, 0)
            mpx = np.prod(shape) / 1e6
            extra = (r["peak"] - r["base"]) / 2**20
            rows.append((name, shape, r, extra))
            print(
                f"{name:14} {'x'.join(map(str, shape)):>16} {r['blocks']:>6} {r['seconds']:7.1f} "
                f"{mpx / r['seconds']:6.2f} {r['seconds'] / r['blocks']:7.2f} {extra:17.0f} MiB",
                flush=True,
            )
        p = Path(tmp) / "workers.ome.zarr"
        make_image(p, (4096, 4096), 256)
        t1 = run(2, p, 1024, 1)["seconds"]
        t2 = run(2, p, 1024, 2)["seconds"]
        print(
            f"4096² on a LocalCluster: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s, "
            f"speed-up {t1 / t2:.2f}x (2 cores, 1 thread per worker)"
        )
    same = [r for r in rows if r[0] == "2D"]
    if len(same) > 1:
        ratio = same[-1][3] / max(same[0][3], 1)
        print(
            f"peak RSS growth from the smallest to the largest 2D image: {ratio:.2f}x "
            f"for {np.prod(same[-1][1]) / np.prod(same[0][1]):.0f}x the pixels"
        )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
