"""The optimisation: learning-rate schedule, weighted loss and the epoch loop."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SegNetError
from ..models import SegNet
from .checkpoint import save_checkpoint
from .prepare import Plan
from .progress import Budget, TrainingUpdate
from .settings import TrainOptions
from .targets import IGNORE
from .validation import validation_score

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def schedule(fraction: float, warmup: float = 0.05, floor: float = 0.05) -> float:
    """Learning-rate factor at ``fraction`` of the run: linear warm-up, then cosine
    decay to ``floor``."""
    if fraction < warmup:
        return max(fraction / warmup, 0.05)
    f = (fraction - warmup) / (1 - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(f, 1.0)))


def weighted_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pixel-weighted cross-entropy over labelled pixels (``target == -1`` ignored)."""
    mask = target != IGNORE
    ce = F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")
    w = weight * mask
    return (ce * w).sum() / mask.sum().clamp(min=1)


def make_optimizer(net: SegNet, options: TrainOptions, lr: float) -> torch.optim.Optimizer:
    """AdamW (with ``weight_decay``) or Adam (without) over the network's parameters."""
    if options.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=options.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=lr, weight_decay=0)


class EpochLoop:
    """Runs epochs of optimisation steps, each followed by validation, and keeps the best.

    Parameters
    ----------
    net : SegNet
        The network to train, on the CPU; moved to ``device``.
    plan : Plan
        Data split, patch sampler and step counts.
    options : TrainOptions
        Hyper-parameters.
    lr : float
        Peak learning rate.
    device : torch.device
        Where to train (CUDA: bfloat16 autocast).
    budget : Budget
        Steps and seconds of the run.
    progress : callable or None
        Receives a :class:`TrainingUpdate` after every step and epoch.
    cancel : threading.Event or None
        Stops the run within a step when set.
    checkpoint : path-like or None
        Folder to write a resumable checkpoint to, every ``options.checkpoint_every``
        epochs and at the end (:func:`~napari_segnet.training.checkpoint.save_checkpoint`).

    Attributes
    ----------
    history : dict of lists
        Per epoch: epoch, mean loss, validation score, learning rate, elapsed time.
    epoch, step : int
        Epochs and steps done.
    best_score : float
        Best validation score (or negative mean loss without validation).
    best_epoch : int
        The epoch that scored it (0 before any).
    resumed_from : str or None
        The checkpoint the run continued from.
    next_batch : tuple of numpy.ndarray or None
        A batch to train the first step on (a resumed run's), instead of sampling one.
    """

    def __init__(
        self,
        net: SegNet,
        plan: Plan,
        options: TrainOptions,
        lr: float,
        device: torch.device,
        budget: Budget,
        progress: Callable[[TrainingUpdate], None] | None = None,
        cancel: threading.Event | None = None,
        checkpoint: str | os.PathLike | None = None,
    ) -> None:
        self.plan = plan
        self.options = options
        self.lr = lr
        self.device = device
        self.budget = budget
        self.progress = progress
        self.cancel = cancel
        self.channels_last = net.dims == 2  # faster on CUDA and on the CPU (oneDNN)
        self.net = net.to(device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.net, options, lr)
        self.history: dict[str, list] = {"epoch": [], "loss": [], "score": [], "lr": [], "time": []}
        self.epoch = 0
        self.step = 0
        self.best_score = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.checkpoint = checkpoint
        self.resumed_from: str | None = None
        self.next_batch: Batch | None = None
        # Fitting instance thresholds after the loop needs validation data and time.
        self.tune = options.target == "instances" and bool(plan.val_pairs)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def run(self) -> SegNet:
        """Train until the epochs, the time, the patience or the caller runs out.

        Returns
        -------
        SegNet
            The network with the best epoch's weights, on the CPU, in eval mode.
        """
        with ThreadPoolExecutor(1) as pool:
            # The next batch is sampled and augmented while the current one trains.
            pending = self.first_batch(pool)
            epochs = self.budget.epochs
            stop = epochs is not None and self.epoch >= epochs  # a finished run resumed
            while not stop:
                self.epoch += 1
                losses, pending = self.train_epoch(pool, pending)
                if not losses:
                    self.epoch -= 1  # stopped before the epoch began
                    break
                # A short epoch was cut by ``cancel`` or the clock: validated, then the end.
                stop = self.end_epoch(losses) or len(losses) < self.plan.steps_per_epoch
                every = self.options.checkpoint_every
                if self.checkpoint is not None and (stop or self.epoch % every == 0):
                    save_checkpoint(self.checkpoint, self, pending.result())
            pending.cancel()
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        return self.net.to(memory_format=torch.contiguous_format).cpu().eval()

    def first_batch(self, pool: ThreadPoolExecutor) -> Future[Batch]:
        """The batch of the first step: a resumed run's, or one being sampled."""
        if self.next_batch is None:
            return pool.submit(self.plan.sampler.batch, self.plan.batch_size)
        done: Future[Batch] = Future()
        done.set_result(self.next_batch)
        self.next_batch = None
        return done

    def train_epoch(
        self, pool: ThreadPoolExecutor, pending: Future[Batch]
    ) -> tuple[list[float], Future[Batch]]:
        """One epoch of steps, fewer when cancelled or out of time.

        Returns the step losses and the batch being prepared for the next step.
        """
        self.net.train()
        losses: list[float] = []
        for _ in range(self.plan.steps_per_epoch):
            if self.cancelled or self.budget.out_of_time():
                break
            batch = pending.result()
            pending = pool.submit(self.plan.sampler.batch, self.plan.batch_size)
            losses.append(self.train_step(batch))
            self.report("step", losses[-1])
        return losses, pending

    def train_step(self, batch: Batch) -> float:
        """One optimisation step on ``batch``; returns its loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * schedule(self.budget.fraction(self.step))
        x, y, w = batch
        xt = torch.from_numpy(x).to(self.device, non_blocking=True)
        if self.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        yt = torch.from_numpy(y).to(self.device)
        wt = torch.from_numpy(w).to(self.device)
        with self.autocast():
            logits = self.net(xt)
        loss = weighted_loss(logits, yt, wt)
        if not torch.isfinite(loss):
            raise SegNetError("training diverged (loss is not finite); lower lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def autocast(self) -> AbstractContextManager:
        """bfloat16 autocast on CUDA; nothing elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def end_epoch(self, losses: list[float]) -> bool:
        """Validate, record the epoch and keep the best weights; True to stop."""
        val_pairs = self.plan.val_pairs
        t_val = self.budget.elapsed()
        score = (
            validation_score(self.net, val_pairs, self.options.target, self.device)
            if val_pairs
            else None
        )
        if self.tune:
            pixels = sum(p.labels.size for p in val_pairs)
            self.budget.reserve_for_tuning(self.budget.elapsed() - t_val, pixels)
        mean_loss = float(np.mean(losses))
        self.record(mean_loss, score)
        key = score if score is not None else -mean_loss
        if key > self.best_score:
            self.best_score, self.best_epoch = key, self.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.report("epoch", mean_loss, score)
        epochs = self.budget.epochs
        return (
            (epochs is not None and self.epoch >= epochs)
            or self.budget.out_of_time()
            or self.epoch - self.best_epoch >= self.options.planned_patience
        )

    def record(self, mean_loss: float, score: float | None) -> None:
        """Append the epoch to ``history``."""
        self.history["epoch"].append(self.epoch)
        self.history["loss"].append(mean_loss)
        self.history["score"].append(score)
        self.history["lr"].append(self.optimizer.param_groups[0]["lr"])
        self.history["time"].append(self.budget.elapsed())

    def report(self, kind: str, loss: float, score: float | None = None) -> None:
        """Send a :class:`TrainingUpdate` of ``kind`` to ``progress``, if any."""
        if self.progress is None:
            return
        self.progress(
            TrainingUpdate(
                kind,
                self.epoch,
                self.step,
                self.budget.epochs,
                float(loss),
                score,
                None if self.best_score == -math.inf else self.best_score,
                self.budget.elapsed(),
                self.budget.fraction(self.step),
                self.net if kind == "epoch" else None,
            )
        )
