"""Patch sampling in worker processes, so that a fast GPU is not left waiting."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from typing import Any

import numpy as np

from ..errors import SegNetError
from .data import PatchSampler

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def _work(sampler: PatchSampler, n: int, seed: int, out: Any, parent: int) -> None:
    """Put batches into ``out`` until the parent goes away or the process is ended."""
    sampler.rng = np.random.default_rng(seed)
    try:
        while os.getppid() == parent:
            x, y, w = sampler.batch(n)
            # Class maps travel as int16, not int64: a quarter of the bytes through the pipe.
            batch = (x, y.astype(np.int16), w)
            while os.getppid() == parent:
                try:
                    out.put(("batch", batch), timeout=1.0)
                    break
                except queue.Full:
                    continue
    except Exception:  # reported to the parent, which raises it
        out.put(("error", traceback.format_exc()))


class WorkerSampler:
    """Batches from ``workers`` processes, each sampling with its own random stream.

    The processes start with :meth:`start` (or the first :meth:`batch`), with seeds
    drawn from the sampler's generator then. Batches arrive in whatever order the
    workers finish them, so runs with workers are not reproducible bit for bit.

    Parameters
    ----------
    sampler : PatchSampler
        The sampler each worker runs (with a fresh random generator).
    workers : int
        Number of processes.
    """

    def __init__(self, sampler: PatchSampler, workers: int):
        self.sampler = sampler
        self.workers = workers
        self.procs: list[Any] = []
        self.queue: Any = None
        self.batch_size: int | None = None

    @property
    def rng(self) -> np.random.Generator:
        """The generator the worker seeds are drawn from (saved in checkpoints)."""
        return self.sampler.rng

    def start(self, n: int) -> None:
        """Start the processes, each making batches of ``n`` patches."""
        # fork shares the training pairs with the workers instead of pickling them.
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        self.queue = ctx.Queue(maxsize=2 * self.workers)
        self.batch_size = n
        seeds = self.rng.integers(0, 2**63 - 1, size=self.workers)
        for seed in seeds:
            p = ctx.Process(
                target=_work,
                args=(self.sampler, n, int(seed), self.queue, os.getpid()),
                daemon=True,
            )
            p.start()
            self.procs.append(p)

    def batch(self, n: int) -> Batch:
        """The next batch of ``n`` augmented patches from any worker."""
        if not self.procs or n != self.batch_size:
            self.close()
            self.start(n)
        while True:
            try:
                kind, value = self.queue.get(timeout=5.0)
                break
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs):
                    raise SegNetError("the patch sampling processes stopped") from None
        if kind == "error":
            self.close()
            raise SegNetError(f"a patch sampling process failed:\n{value}")
        x, y, w = value
        return x, y.astype(np.int64), w

    def close(self) -> None:
        """End the worker processes."""
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(timeout=5.0)
        self.procs = []
        if self.queue is not None:
            self.queue.close()
            self.queue.cancel_join_thread()
            self.queue = None
