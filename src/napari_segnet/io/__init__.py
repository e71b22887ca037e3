"""Reading and writing: images, model files and the bundled models, zarr outputs."""

from .bundled import available_models, load_model
from .model_files import save_model

__all__ = ["available_models", "load_model", "save_model"]
