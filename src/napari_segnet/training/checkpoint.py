"""Checkpoints a run can be resumed from: weights, optimizer state and random state.

A checkpoint folder holds

- ``model.segnet``: the current weights (:func:`save_model`);
- ``state.safetensors``: the optimizer's tensors, the best epoch's weights, torch's
  random state and the batch prepared for the next step;
- ``state.json``: epoch, step, history, best score, elapsed time, the optimizer's
  scalar settings and the numpy random state, and the run's shape (to check a resume).

Nothing is pickled, so loading a checkpoint never runs code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import SegNetError
from ..io.model_files import load_model_file, save_model
from ..models import SegNet

if TYPE_CHECKING:
    from .epochs import EpochLoop

FORMAT = "napari-segnet-checkpoint"
VERSION = 1
MODEL, TENSORS, STATE = "model.segnet", "state.safetensors", "state.json"
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def run_shape(loop: EpochLoop) -> dict[str, Any]:
    """What must be the same for a run to continue from a checkpoint."""
    plan = loop.plan
    return {
        "target": loop.options.target,
        "seed": loop.options.seed,
        "patch_size": list(plan.patch_size),
        "batch_size": plan.batch_size,
        "steps_per_epoch": plan.steps_per_epoch,
        "train_pairs": len(plan.train_pairs),
        "validation_pairs": len(plan.val_pairs),
        "optimizer": loop.options.optimizer,
    }


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """The optimizer's state dict split into JSON values and named tensors."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return {"param_groups": groups, "scalars": scalars}, tensors


def restore_optimizer(
    optimizer: torch.optim.Optimizer, saved: dict, tensors: dict[str, torch.Tensor]
) -> None:
    """Load what :func:`optimizer_state` split off back into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entries in saved["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in saved["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(folder: str | os.PathLike, loop: EpochLoop, batch: Batch) -> Path:
    """Write the state of ``loop`` (after an epoch) and the next ``batch`` to ``folder``.

    Files are written under temporary names and then moved, ``state.json`` last.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    opt_json, tensors = optimizer_state(loop.optimizer)
    tensors["torch_rng"] = torch.get_rng_state()
    if loop.device.type == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(loop.device)
    for name, array in zip(("image", "target", "weight"), batch):
        tensors[f"batch.{name}"] = torch.from_numpy(np.ascontiguousarray(array))
    for key, value in (loop.best_state or {}).items():
        tensors[f"best.{key}"] = value.detach().cpu().contiguous()
    state = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": loop.epoch,
        "step": loop.step,
        "elapsed": loop.budget.elapsed(),
        "best_score": None if loop.best_state is None else loop.best_score,
        "best_epoch": loop.best_epoch,
        "history": loop.history,
        "lr": loop.lr,
        "optimizer": opt_json,
        "numpy_rng": loop.plan.sampler.rng.bit_generator.state,
        "run": run_shape(loop),
    }
    model_tmp = save_model(loop.net, out / "model.partial.segnet", overwrite=True)
    os.replace(model_tmp, out / MODEL)
    save_file(tensors, str(out / (TENSORS + ".partial")), metadata={"step": str(loop.step)})
    os.replace(out / (TENSORS + ".partial"), out / TENSORS)
    (out / (STATE + ".partial")).write_text(json.dumps(state))
    os.replace(out / (STATE + ".partial"), out / STATE)
    return out


@dataclass
class Checkpoint:
    """A checkpoint read back: its JSON state, tensors and current weights."""

    folder: Path
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    model: SegNet

    @property
    def batch(self) -> Batch:
        """The batch that was prepared for the step after the checkpoint."""
        return tuple(self.tensors[f"batch.{n}"].numpy() for n in ("image", "target", "weight"))

    def restore(self, loop: EpochLoop) -> None:
        """Continue ``loop`` from here: weights, optimizer, counters, history, random state.

        Raises
        ------
        SegNetError
            When the run is set up differently (network, data, patches, batches).
        """
        if self.model.config != loop.net.config:
            raise SegNetError(
                f"{self.folder}: the checkpoint's network ({self.model.config}) is not "
                f"the one this run trains ({loop.net.config})"
            )
        now = run_shape(loop)
        saved = self.state["run"]
        differ = [k for k in now if saved.get(k) != now[k]]
        if differ:
            what = ", ".join(f"{k} {saved.get(k)!r} then, {now[k]!r} now" for k in differ)
            raise SegNetError(f"{self.folder}: this run differs from the checkpoint's: {what}")
        loop.net.load_state_dict(self.model.state_dict())
        restore_optimizer(loop.optimizer, self.state["optimizer"], self.tensors)
        best = {k[5:]: v for k, v in self.tensors.items() if k.startswith("best.")}
        loop.best_state = best or None
        if self.state["best_score"] is not None:
            loop.best_score = float(self.state["best_score"])
        loop.best_epoch = int(self.state["best_epoch"])
        loop.epoch = int(self.state["epoch"])
        loop.step = int(self.state["step"])
        loop.history = {k: list(v) for k, v in self.state["history"].items()}
        loop.budget.start -= float(self.state["elapsed"])
        loop.plan.sampler.rng.bit_generator.state = self.state["numpy_rng"]
        torch.set_rng_state(self.tensors["torch_rng"])
        if loop.device.type == "cuda" and "cuda_rng" in self.tensors:
            torch.cuda.set_rng_state(self.tensors["cuda_rng"], loop.device)
        loop.resumed_from = str(self.folder)
        loop.next_batch = self.batch


def load_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    Raises
    ------
    SegNetError
        When the folder is missing, incomplete or not a checkpoint.
    """
    root = Path(folder)
    missing = [n for n in (MODEL, TENSORS, STATE) if not (root / n).is_file()]
    if missing:
        raise SegNetError(f"{root}: not a training checkpoint (missing {', '.join(missing)})")
    try:
        state = json.loads((root / STATE).read_text())
        tensors = load_file(str(root / TENSORS))
    except (OSError, ValueError, SafetensorError) as e:
        raise SegNetError(f"{root}: cannot read the checkpoint ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SegNetError(f"{root / STATE}: not a napari-segnet checkpoint")
    if state.get("version", 0) > VERSION:
        raise SegNetError(f"{root / STATE}: checkpoint version {state['version']} is too new")
    return Checkpoint(root, state, tensors, load_model_file(root / MODEL))
