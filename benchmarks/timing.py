"""Timing shared by the benchmarks: best of several runs, after a warm-up."""

from __future__ import annotations

import time

import torch


def best_times(fns, repeats: int) -> tuple[list, list[float]]:
    """Outputs and best seconds of each function, run in turns (after one warm-up each,
    for the allocator and oneDNN/cuDNN kernel choice) so that a slow spell of a shared
    machine hits all of them alike."""
    outs = [fn() for fn in fns]
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[i] = min(best[i], time.perf_counter() - t)
    return outs, best


def best_time(fn, repeats: int) -> float:
    """Best seconds of ``fn`` over ``repeats`` runs after a warm-up."""
    return best_times([fn], repeats)[1][0]
