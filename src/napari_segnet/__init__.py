"""napari-segnet: train and run segmentation networks on microscopy images.

The core (this package) imports neither Qt nor napari; the napari plugin lives in
``napari_segnet._napari`` and is loaded by napari through ``napari.yaml``.
"""

from . import data
from ._version import __version__
from .engine import predict, predict_dask
from .engine.size import estimate_diameter
from .errors import (
    Cancelled,
    ModelConfigError,
    ModelFileError,
    NotAModelError,
    SegNetError,
    SegNetWarning,
)
from .io import (
    available_models,
    export_bioimageio,
    load_bioimageio,
    load_model,
    read_collection,
    save_model,
)
from .io.ome_zarr import read_ome_zarr
from .measure import measure, summarize
from .metrics import average_precision, mean_iou
from .models import SegNet, architectures, build_model
from .postprocess import label_instances, label_instances_blockwise, refine_crf
from .postprocess.tracking import link_over_time
from .segment import SegmentResult, segment
from .segment_ome import OmeZarrResult, segment_ome_zarr
from .training import TrainingUpdate, train
from .training.weights import boundary_weight_map

__all__ = [
    "Cancelled",
    "ModelConfigError",
    "ModelFileError",
    "NotAModelError",
    "OmeZarrResult",
    "SegNet",
    "SegNetError",
    "SegNetWarning",
    "SegmentResult",
    "TrainingUpdate",
    "__version__",
    "architectures",
    "available_models",
    "average_precision",
    "boundary_weight_map",
    "build_model",
    "data",
    "estimate_diameter",
    "export_bioimageio",
    "label_instances",
    "label_instances_blockwise",
    "link_over_time",
    "load_bioimageio",
    "load_model",
    "mean_iou",
    "measure",
    "predict",
    "predict_dask",
    "read_collection",
    "read_ome_zarr",
    "refine_crf",
    "save_model",
    "segment",
    "segment_ome_zarr",
    "summarize",
    "train",
]


def __getattr__(name: str):
    # ``ns.napari`` (layer helpers for the napari console) imports napari only when used.
    if name == "napari":
        import importlib

        return importlib.import_module("napari_segnet._napari.console")
    raise AttributeError(f"module 'napari_segnet' has no attribute {name!r}")
