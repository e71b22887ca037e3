"""napari-segnet: train and run segmentation networks on microscopy images.

The core (this package) imports neither Qt nor napari; the napari plugin lives in
``napari_segnet._napari`` and is loaded by napari through ``napari.yaml``.
"""

from . import data
from ._version import __version__
from .dask_engine import predict_dask
from .errors import Cancelled, ModelFileError, SegNetError
from .instances import label_instances
from .models import (
    SegNet,
    architectures,
    available_models,
    build_model,
    load_model,
    save_model,
)
from .segment import SegmentResult, segment
from .tiling import predict

__all__ = [
    "Cancelled",
    "ModelFileError",
    "SegNet",
    "SegNetError",
    "SegmentResult",
    "__version__",
    "architectures",
    "available_models",
    "build_model",
    "data",
    "label_instances",
    "load_model",
    "predict",
    "predict_dask",
    "save_model",
    "segment",
]
