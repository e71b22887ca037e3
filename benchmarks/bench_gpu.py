"""End-to-end ``ns.segment`` throughput with the bundled nuclei model, split into parts.

Run: python benchmarks/bench_gpu.py [--device cuda] [--size2d 8192] [--size3d 128x1024x1024]
        [--precisions float32,bfloat16,float16] [--repeats 2] [--json OUT.json]
     CPU dry run: python benchmarks/bench_gpu.py --device cpu --size2d 512 --size3d 8x256x256

For a 2D uint16 image (axes YX) and a volume (axes ZYX, run by the 2D model as a stack
of slices), at each precision, it measures (wall seconds, best of ``--repeats`` after
one warm-up, except ``segment``, which runs ``--segment-repeats`` times after the
warm-ups):

- total: ``ns.segment(...)`` wall time, split by its ``progress`` callback (called with 0
  once the plan is made and after each written batch) into plan (normalisation
  statistics, tile layout), tiles (reading, host to device, normalisation, forward,
  softmax, device to host, writing) and post (argmax, instance labelling, assembly);
- predict: ``ns.predict(...)`` wall time (plan + tiles, no post-processing);
- forward (engine): the model's forward passes inside ``segment``, timed by CUDA events
  (perf_counter on the CPU) recorded by forward hooks on the model (the engine's
  private copy keeps them); the batch shapes seen there are recorded too;
- forward (alone): the model alone on tensors already on the device, in batches of the
  shapes recorded above, same precision and memory format as the engine;
- transfer: the same bytes copied host to device (raw image dtype, pinned per batch as
  the engine does) and back (float32 probabilities of each tile centre), with sync;
- GPU busy: mean NVML utilisation sampled during ``segment`` and during its tiles phase
  (``torch.cuda.utilization`` with pynvml, else ``nvidia-smi -lms``), and
  forward (engine) / total.

Then, on CUDA, the out-of-memory back-off: ``predict`` with a large tile batch under a
low ``torch.cuda.set_per_process_memory_fraction``, compared with an unrestricted run,
and the same for a single tile too large for the limit (the tile centre is halved).
Last, precisions on the CPU (autocast) on a small image, with what happens if one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import torch

import napari_segnet as ns

NA = "N/A"


def parse_shape(text: str, nd: int) -> tuple[int, ...]:
    parts = [int(v) for v in str(text).lower().split("x")]
    if len(parts) == 1:
        parts = parts * nd
    if len(parts) != nd:
        raise SystemExit(f"expected {nd} sizes in {text!r}")
    return tuple(parts)


def _base_tiles(side: int, n: int = 2) -> list[np.ndarray]:
    return [ns.data.synthetic_nuclei((side, side), seed=s)[0] for s in range(n)]


def image_2d(shape: tuple[int, int]) -> np.ndarray:
    """A large uint16 nuclei image: 1024² synthetic tiles, mirrored so seams look natural."""
    side = min(1024, max(shape))
    a, b = _base_tiles(side)
    block = np.block([[a, b[:, ::-1]], [b[::-1], a[::-1, ::-1]]])
    reps = [math.ceil(s / n) for s, n in zip(shape, block.shape)]
    return np.ascontiguousarray(np.tile(block, reps)[: shape[0], : shape[1]])


def volume(shape: tuple[int, int, int]) -> np.ndarray:
    """A uint16 stack: each slice a shifted copy of a 2D nuclei image (distinct slices)."""
    z, h, w = shape
    plane = image_2d((h, w))
    out = np.empty(shape, np.uint16)
    for i in range(z):
        out[i] = np.roll(plane, (37 * i, 53 * i), axis=(0, 1))
    return out


def _mark(x: torch.Tensor):
    """A point in time: a CUDA event on the current stream, or perf_counter on the CPU."""
    if x.is_cuda:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev
    return time.perf_counter()


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class ForwardProbe:
    """Forward hooks on a model: the input shape of every forward and its duration.

    ``torch.nn.Module`` deep copies keep their hooks, so the engine's private copy
    (channels-last, eval mode) reports here too. A forward that starts and never ends
    (out of memory inside it) shows as a record without an end.
    """

    def __init__(self, model: torch.nn.Module):
        self.records: list[dict] = []
        self.active = True

        # Plain closures, not bound methods: deepcopy shares functions but would copy
        # a bound method's object, and the copy's records would be lost.
        def pre(_m, args):
            if self.active and args and isinstance(args[0], torch.Tensor):
                x = args[0]
                self.records.append({"shape": tuple(x.shape), "start": _mark(x), "end": None})

        def post(_m, args, _out):
            if self.active and self.records and args and isinstance(args[0], torch.Tensor):
                self.records[-1]["end"] = _mark(args[0])

        self.handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post)]

    def clear(self) -> None:
        self.records = []

    def seconds(self) -> float:
        if any(not isinstance(r["start"], float) for r in self.records):
            torch.cuda.synchronize()
        total = 0.0
        for r in self.records:
            if r["end"] is None:
                continue
            if isinstance(r["start"], float):
                total += r["end"] - r["start"]
            else:
                total += r["start"].elapsed_time(r["end"]) / 1e3
        return total

    def failed(self) -> int:
        return sum(r["end"] is None for r in self.records)

    def shapes(self) -> list[tuple[int, ...]]:
        return [r["shape"] for r in self.records if r["end"] is not None]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class UtilSampler:
    """Samples GPU utilisation (percent) in the background while the block runs."""

    def __init__(self, dev: torch.device, interval: float = 0.05):
        self.dev, self.interval = dev, interval
        self.samples: list[float] = []
        self.source = None
        self._stop = threading.Event()
        self._thread = self._proc = None

    def __enter__(self):
        if self.dev.type != "cuda":
            return self
        try:
            torch.cuda.utilization(self.dev)
            self.source = "torch.cuda.utilization (NVML)"
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        except Exception:
            if shutil.which("nvidia-smi"):
                self._start_smi()
        return self

    def _poll(self):
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                u = float(torch.cuda.utilization(self.dev))
                self.samples.append((time.perf_counter(), u))
            time.sleep(self.interval)

    def _start_smi(self):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        index = visible if visible.isdigit() else str(self.dev.index or 0)
        cmd = ["nvidia-smi", "-i", index, "--query-gpu=utilization.gpu"]
        cmd += ["--format=csv,noheader,nounits", f"--loop-ms={int(self.interval * 1000)}"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.source = "nvidia-smi -lms"
        first = threading.Event()

        def read():
            for line in self._proc.stdout:
                if self._stop.is_set():
                    break
                with contextlib.suppress(ValueError):
                    self.samples.append((time.perf_counter(), float(line.strip())))
                    first.set()

        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        first.wait(5.0)
        self.samples.clear()  # from now on only samples inside the block

    def __exit__(self, *exc):
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(Exception):
                self._proc.wait(5)
        if self._thread is not None:
            self._thread.join(5)
        return False

    def mean(self, t0: float = -math.inf, t1: float = math.inf) -> float | None:
        """Mean utilisation of the samples taken between ``t0`` and ``t1`` (perf_counter)."""
        v = [u for t, u in self.samples if t0 <= t <= t1]
        return float(np.mean(v)) if v else None


def engine_net(model, dev: torch.device) -> torch.nn.Module:
    """The model as the engine runs it: an eval copy on the device, channels-last in 2D."""
    net = copy.deepcopy(model).to(dev).eval()
    if model.dims == 2:
        net = net.to(memory_format=torch.channels_last)
    return net


def autocast(dev: torch.device, precision: str):
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=getattr(torch, precision))


def forward_alone(net, shapes, dev, precision, channels_last: bool) -> float:
    """Seconds for the model alone over batches of ``shapes`` already on the device."""
    if not shapes:
        return float("nan")
    inputs = {}
    for s in set(shapes):
        x = torch.randn(s, device=dev)
        inputs[s] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.inference_mode(), autocast(dev, precision):
        for s in inputs:  # warm-up: kernel choice for each shape
            net(inputs[s])
        sync(dev)
        t = time.perf_counter()
        for s in shapes:
            net(inputs[s])
        sync(dev)
    return time.perf_counter() - t


def transfer(shapes, itemsize: int, n_classes: int, core, dev) -> tuple[float, float]:
    """Host-to-device seconds for the raw tiles of ``shapes`` (pinned per batch as the
    engine does) and device-to-host seconds for their float32 centre probabilities."""
    if dev.type != "cuda" or not shapes:
        return float("nan"), float("nan")
    dtype = {1: np.uint8, 2: np.int16, 4: np.float32}.get(itemsize, np.float32)
    hosts = {s: np.zeros(s, dtype) for s in set(shapes)}
    outs = {s: torch.zeros((s[0], n_classes, *core), device=dev) for s in set(shapes)}
    for s in hosts:  # warm-up
        torch.from_numpy(hosts[s]).pin_memory().to(dev, non_blocking=True)
    sync(dev)
    t = time.perf_counter()
    for s in shapes:
        torch.from_numpy(hosts[s]).pin_memory().to(dev, non_blocking=True)
    sync(dev)
    h2d = time.perf_counter() - t
    t = time.perf_counter()
    for s in shapes:
        host = torch.empty(outs[s].shape, dtype=torch.float32, pin_memory=True)
        host.copy_(outs[s], non_blocking=True)
    sync(dev)
    return h2d, time.perf_counter() - t


def timed(fn, dev):
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    return out, time.perf_counter() - t


def run_case(
    name, image, axes, model, probe, dev, precision, repeats, seg_repeats, tile_size=None
) -> dict:
    device = str(dev)
    row = {"case": name, "shape": list(image.shape), "axes": axes, "precision": precision}
    row["tile_size_asked"] = tile_size
    kw = {"device": device, "precision": precision, "tile_size": tile_size}
    mpx = image.size / 1e6
    row["mpix"] = mpx

    def pred():
        return ns.predict(image, model, axes, **kw)

    try:
        probe.clear()
        timed(pred, dev)  # warm-up: allocator, kernel choice, the engine's memory probe
        best_pred = float("inf")
        for _ in range(repeats):
            probe.clear()
            _, s = timed(pred, dev)
            best_pred = min(best_pred, s)
        best_total, shapes, info = float("inf"), [], {}
        for _ in range(seg_repeats):
            probe.clear()
            marks = {}

            def progress(done, total, marks=marks):
                # Called with 0 once the plan is made, and after each batch is written.
                now = time.perf_counter()
                marks.setdefault("tiles_start", now)
                if done >= total:
                    marks["tiles_end"] = now

            with UtilSampler(dev) as sampler:
                t0 = time.perf_counter()
                # diameter=None: the image's own scale (no size-estimate pass in the timing).
                res = ns.segment(image, model, axes, progress=progress, diameter=None, **kw)
                sync(dev)
                t1 = time.perf_counter()
            if t1 - t0 < best_total:
                best_total, info = t1 - t0, dict(res.info)
                t_start = marks.get("tiles_start", t0)
                t_end = marks.get("tiles_end", t1)
                row.update(
                    plan_s=t_start - t0,
                    tiles_s=t_end - t_start,
                    post_s=t1 - t_end,
                    gpu_util_percent=sampler.mean(),
                    gpu_util_tiles_percent=sampler.mean(t_start, t_end),
                    util_source=sampler.source,
                    forward_engine_s=probe.seconds(),
                )
                shapes = probe.shapes()
            del res
    except Exception as e:  # record what happened and go on with the next case
        row["error"] = f"{type(e).__name__}: {e}"
        print(f"{name} {precision}: {row['error']}", flush=True)
        return row
    probe.active = False
    try:
        net = engine_net(model, dev)
        fwd_alone = forward_alone(net, shapes, dev, precision, model.dims == 2)
        del net
        core = tuple(info.get("tile_core", ()))
        h2d, d2h = transfer(shapes, image.dtype.itemsize, model.n_classes, core, dev)
    finally:
        probe.active = True
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    info["tile_core"] = list(info.get("tile_core", ()))
    batches = {}
    for s in shapes:
        batches[s[0]] = batches.get(s[0], 0) + 1
    row.update(
        info=info,
        total_s=best_total,
        predict_s=best_pred,
        forward_alone_s=fwd_alone,
        h2d_s=h2d,
        d2h_s=d2h,
        transfer_s=h2d + d2h,
        forward_batches={str(k): v for k, v in sorted(batches.items())},
        tile_input_shape=list(shapes[0][1:]) if shapes else None,
        mpix_per_s=mpx / best_total,
        predict_mpix_per_s=mpx / best_pred,
        forward_share=row["forward_engine_s"] / best_total,
    )
    return row


def fmt(v, spec=".2f", pct=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    return f"{v:.0f} %" if pct else format(v, spec)


def print_table(rows: list[dict]) -> None:
    print(
        "| case | precision | tiles: core x n (batch) | total s | M/s end to end | plan s "
        "| tiles s | post s | predict s | M/s predict | forward s (engine) | forward s (alone) "
        "| transfer s | GPU busy: total / tiles | forward / total |"
    )
    print("|---|---|---|" + "---:|" * 12)
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | {r['precision']} | {r['error']} |" + " |" * 12)
            continue
        i = r["info"]
        core = "x".join(str(c) for c in i.get("tile_core", []))
        busy = (
            f"{fmt(r['gpu_util_percent'], pct=True)} / {fmt(r['gpu_util_tiles_percent'], pct=True)}"
        )
        print(
            f"| {r['case']} | {r['precision']} | {core} x {i.get('n_tiles')} "
            f"({i.get('batch_size')}) | {fmt(r['total_s'])} | {fmt(r['mpix_per_s'])} "
            f"| {fmt(r['plan_s'])} | {fmt(r['tiles_s'])} | {fmt(r['post_s'])} "
            f"| {fmt(r['predict_s'])} | {fmt(r['predict_mpix_per_s'])} "
            f"| {fmt(r['forward_engine_s'])} | {fmt(r['forward_alone_s'])} "
            f"| {fmt(r['transfer_s'])} | {busy} | {fmt(r['forward_share'], '.0%')} |",
            flush=True,
        )


def oom_check(model, dev, size: int, tile: int, batch: int) -> dict:
    """Batch and tile halving on CUDA out-of-memory, forced by a per-process memory limit."""
    if dev.type != "cuda":
        print("OOM back-off check: skipped (needs CUDA; there is no out-of-memory back-off on CPU)")
        return {"skipped": "needs CUDA"}
    img = image_2d((size, size))
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    probe = ForwardProbe(model)
    out = {"image": [size, size], "tile_size": tile, "precision": "float32 (no TF32)"}
    total = torch.cuda.get_device_properties(dev).total_memory

    def run(tile_size, batch_size, fraction=None):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        if fraction is not None:
            torch.cuda.set_per_process_memory_fraction(fraction, dev)
        probe.clear()
        try:
            got = ns.predict(
                img,
                model,
                device=str(dev),
                precision="float32",
                tile_size=tile_size,
                batch_size=batch_size,
            )
            err = None
        except Exception as e:
            got, err = None, f"{type(e).__name__}: {e}"
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, dev)
        peak = torch.cuda.max_memory_reserved(dev)
        return got, err, peak

    try:
        ref, err, peak1 = run(tile, 1)
        if err:
            out["error"] = f"reference run: {err}"
            return out
        out["peak_reserved_one_tile_gib"] = peak1 / 2**30
        for kind, tile_size, batch_size, limit in (
            ("batch halving", tile, batch, 2.5 * peak1),
            ("tile halving", 2 * tile, 1, 1.2 * peak1),
        ):
            got, err, peak = run(tile_size, batch_size, limit / total)
            seen = {}
            for s in probe.shapes():
                key = f"{s[0]}x" + "x".join(str(v) for v in s[2:])
                seen[key] = seen.get(key, 0) + 1
            r = {
                "tile_size": tile_size,
                "batch_size": batch_size,
                "limit_gib": limit / 2**30,
                "failed_forwards": probe.failed(),
                "forwards_done (batch x tile input)": seen,
                "peak_reserved_gib": peak / 2**30,
            }
            if err:
                r["error"] = err
            else:
                r["max_abs_diff"] = float(np.abs(got - ref).max())
                r["argmax_equal"] = float((got.argmax(0) == ref.argmax(0)).mean())
            out[kind] = r
            print(f"OOM back-off, {kind}: {json.dumps(r)}", flush=True)
    finally:
        probe.remove()
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
        torch.cuda.empty_cache()
    return out


def cpu_amp(model, size: int) -> list[dict]:
    """``predict`` on the CPU at each precision: time, and difference from float32."""
    img = image_2d((size, size))
    rows, ref, cpu = [], None, torch.device("cpu")
    print(f"\nCPU autocast, {size}x{size} image, {torch.get_num_threads()} threads:")
    print("| precision | seconds | max abs diff vs float32 | argmax agreement | note |")
    print("|---|---:|---:|---:|---|")
    for p in ("float32", "bfloat16", "float16"):
        r = {"precision": p}
        try:
            ns.predict(img, model, device="cpu", precision=p)  # warm-up
            got, s = timed(lambda p=p: ns.predict(img, model, device="cpu", precision=p), cpu)
            r["seconds"] = s
            if ref is None:
                ref = got
            r["max_abs_diff"] = float(np.abs(got - ref).max())
            r["argmax_agreement"] = float((got.argmax(0) == ref.argmax(0)).mean())
            r["finite"] = bool(np.isfinite(got).all())
            note = "" if r["finite"] else "non-finite values"
            print(
                f"| {p} | {s:.2f} | {r['max_abs_diff']:.2e} | {r['argmax_agreement']:.4f} "
                f"| {note} |",
                flush=True,
            )
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {e}"
            print(f"| {p} | {NA} | {NA} | {NA} | {r['error']} |", flush=True)
        rows.append(r)
    return rows


def environment(dev: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "napari_segnet": ns.__version__,
        "napari_segnet_file": ns.__file__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
    }
    with contextlib.suppress(Exception):
        env["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update(
            gpu=p.name,
            gpu_memory_gib=p.total_memory / 2**30,
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size2d", default="8192", help="N or HxW; 0 leaves the 2D case out")
    p.add_argument("--size3d", default="128x1024x1024", help="ZxYxX; 0 leaves it out")
    p.add_argument("--precisions", default="float32,bfloat16,float16")
    p.add_argument("--repeats", type=int, default=2, help="timed predict runs, best kept")
    p.add_argument("--segment-repeats", type=int, default=1, help="timed segment runs")
    p.add_argument(
        "--fallback-tile",
        type=int,
        default=2048,
        help="tile_size for a second try when the automatic plan fails (0: none)",
    )
    p.add_argument("--oom-size", type=int, default=4096, help="image side for the OOM check")
    p.add_argument("--oom-tile", type=int, default=512)
    p.add_argument("--oom-batch", type=int, default=16)
    p.add_argument("--no-oom", action="store_true")
    p.add_argument("--cpu-amp-size", type=int, default=256, help="0 leaves the check out")
    p.add_argument("--json", help="write all results here")
    a = p.parse_args()

    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    env = environment(dev)
    print(json.dumps(env))
    model = ns.load_model("nuclei")
    probe = ForwardProbe(model)
    precisions = [s.strip() for s in a.precisions.split(",") if s.strip()]
    cases = []
    if a.size2d not in ("0", ""):
        cases.append(("2D", lambda: image_2d(parse_shape(a.size2d, 2)), "YX"))
    if a.size3d not in ("0", ""):
        cases.append(("3D stack", lambda: volume(parse_shape(a.size3d, 3)), "ZYX"))
    rows = []
    for name, make, axes in cases:
        t = time.perf_counter()
        image = make()
        label = f"{name} {'x'.join(map(str, image.shape))} {image.dtype}"
        print(f"{label}: made in {time.perf_counter() - t:.1f} s", flush=True)
        for prec in precisions:
            t = time.perf_counter()
            row = run_case(
                label, image, axes, model, probe, dev, prec, a.repeats, a.segment_repeats
            )
            row["case_wall_s"] = time.perf_counter() - t
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
            if "error" in row and a.fallback_tile:
                # The automatic plan failed (e.g. one huge tile): the same with a fixed tile.
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                row = run_case(
                    f"{label}, tile_size {a.fallback_tile}",
                    image,
                    axes,
                    model,
                    probe,
                    dev,
                    prec,
                    a.repeats,
                    a.segment_repeats,
                    a.fallback_tile,
                )
                rows.append(row)
                print(json.dumps(row, default=str), flush=True)
        del image
    probe.remove()
    if rows:
        unit = "M/s: megapixels (2D) or megavoxels (3D) per second"
        print(
            f"\nns.segment with the bundled nuclei model on {dev} (best of {a.repeats} predict, "
            f"{a.segment_repeats} segment; {unit}; plan/tiles/post: segment split by its "
            "progress calls):"
        )
        print_table(rows)
        for r in rows:
            if r["case"].startswith("2D") and "error" not in r:
                print(
                    f"2D {r['precision']}: {r['mpix_per_s']:.1f} MPix/s end to end "
                    f"(goal >= 200), {r['predict_mpix_per_s']:.1f} MPix/s predict"
                )
        if dev.type != "cuda":
            print("GPU-only columns (transfer, GPU busy) are N/A on the CPU.")
    oom = {"skipped": "--no-oom"}
    if not a.no_oom:
        print()
        oom = oom_check(model, dev, a.oom_size, a.oom_tile, a.oom_batch)
    amp = cpu_amp(model, a.cpu_amp_size) if a.cpu_amp_size else []
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": env, "cases": rows, "oom": oom, "cpu_amp": amp}, f, indent=1)
        print(f"results written to {a.json}")


if __name__ == "__main__":
    sys.exit(main())
