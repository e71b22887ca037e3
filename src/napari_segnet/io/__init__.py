"""Reading and writing: images, model files and the bundled models, zarr outputs, collections."""

from .bioimageio_export import export_bioimageio
from .bioimageio_import import load_bioimageio
from .bundled import available_models, load_model
from .collection import Collection, read_collection
from .model_files import save_model

__all__ = [
    "Collection",
    "available_models",
    "export_bioimageio",
    "load_bioimageio",
    "load_model",
    "read_collection",
    "save_model",
]
