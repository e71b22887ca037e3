"""From probabilities to results: instance labelling and the dense CRF."""

from .crf import refine_crf
from .instances import label_instances, label_instances_blockwise

__all__ = ["label_instances", "label_instances_blockwise", "refine_crf"]
