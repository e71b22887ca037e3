"""The overlap-tile engine: axes, normalisation, tile geometry, memory, runner, sinks."""

from .dask_engine import predict_dask
from .predict import predict

__all__ = ["predict", "predict_dask"]
