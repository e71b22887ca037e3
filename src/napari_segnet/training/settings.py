"""``TrainOptions``: the hyper-parameters of one ``train`` call, checked once."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..errors import SegNetError
from ..options import TARGETS
from .augment import Augmentation

OPTIMIZERS = ("adamw", "adam")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int, optional: bool = True) -> None:
    """``value`` must be an integer of at least ``low`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if not _is_int(value) or value < low:
        allowed = f"an integer of at least {low}" + (" or None" if optional else "")
        raise SegNetError(f"{name} must be {allowed}, not {value!r}")


def _check_number(
    name: str, value: Any, *, low: float, low_open: bool, high: float = math.inf
) -> None:
    """``value`` must be a finite number above ``low`` (or at least it) and below ``high``."""
    ok = _is_number(value) and math.isfinite(value) and value < high
    ok = ok and (value > low if low_open else value >= low)
    if not ok:
        bound = f"greater than {low}" if low_open else f"at least {low}"
        upper = f" and below {high}" if math.isfinite(high) else ""
        raise SegNetError(f"{name} must be a finite number {bound}{upper}, not {value!r}")


def _check_patch_size(value: Any) -> None:
    if value is None or (_is_int(value) and value > 0):
        return
    if isinstance(value, (tuple, list)) and value and all(_is_int(v) and v > 0 for v in value):
        return
    raise SegNetError(
        f"patch_size must be a positive integer, a tuple of them (one per spatial axis) "
        f"or None, not {value!r}"
    )


@dataclass(frozen=True)
class TrainOptions:
    """The hyper-parameters of a training run, as given to :func:`train`.

    Values are kept as given (None where ``train`` picks a default later, from the
    data or the network), so what ``train`` records in ``meta["training"]`` is what
    the caller asked for. See :func:`train` for the meaning of each.
    """

    target: str = "instances"
    epochs: int | None = None
    max_time: float | None = None
    w0: float = 10.0
    sigma: float = 5.0
    patch_size: int | tuple[int, ...] | None = None
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    validation: float = 0.15
    patience: int | None = None
    augmentation: Augmentation | None = None
    seed: int = 0
    diameter: float | None = None
    checkpoint_every: int = 1
    workers: int = 0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise SegNetError(f"target must be one of {TARGETS}, not {self.target!r}")
        _check_int("epochs", self.epochs, 1)
        if self.max_time is not None:
            _check_number("max_time (seconds)", self.max_time, low=0, low_open=True)
        _check_number("w0", self.w0, low=0, low_open=False)
        _check_number("sigma", self.sigma, low=0, low_open=True)
        _check_patch_size(self.patch_size)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("steps_per_epoch", self.steps_per_epoch, 1)
        if self.lr is not None:
            _check_number("lr", self.lr, low=0, low_open=True)
        _check_number("weight_decay", self.weight_decay, low=0, low_open=False)
        if self.optimizer not in OPTIMIZERS:
            raise SegNetError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        _check_number("validation", self.validation, low=0, low_open=False, high=1)
        _check_int("patience", self.patience, 1)
        if self.augmentation is not None and not isinstance(self.augmentation, Augmentation):
            raise SegNetError(
                f"augmentation must be an Augmentation or None, not {self.augmentation!r}"
            )
        _check_int("seed", self.seed, 0, optional=False)
        if self.diameter is not None:
            _check_number("diameter (pixels)", self.diameter, low=0, low_open=True)
            if self.target != "instances":
                raise SegNetError(
                    "diameter rescales images by their objects' size: it needs target='instances'"
                )
        _check_int("checkpoint_every", self.checkpoint_every, 1, optional=False)
        _check_int("workers", self.workers, 0, optional=False)

    @property
    def planned_epochs(self) -> int | None:
        """Epochs to run: as given, 50 when neither epochs nor ``max_time`` bound the run."""
        if self.epochs is None and self.max_time is None:
            return 50
        return self.epochs

    @property
    def planned_patience(self) -> int:
        """Epochs without a better score before stopping (20; unbounded for timed runs)."""
        if self.patience is not None:
            return self.patience
        return 20 if self.max_time is None else 10**9

    @property
    def augmentation_or_default(self) -> Augmentation:
        """The augmentation to use (the default one when none was given)."""
        return self.augmentation if self.augmentation is not None else Augmentation()
