"""Training networks from dense labels, instance labels or scribbles."""

from .loop import TrainingUpdate, train
from .targets import TARGETS, make_target

__all__ = ["TARGETS", "TrainingUpdate", "make_target", "train"]
