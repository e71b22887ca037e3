"""Reading and writing: images, model files and the bundled models, zarr outputs, collections."""

from .bundled import available_models, load_model
from .collection import Collection, read_collection
from .model_files import save_model

__all__ = ["Collection", "available_models", "load_model", "read_collection", "save_model"]
