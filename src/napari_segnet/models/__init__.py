"""Networks: UNet, DeConvNet and dilated nets; building, saving and loading them."""

from .base import SegNet
from .files import save_model
from .registry import ARCHITECTURES, architectures, build_from_config, build_model
from .unet import UPSAMPLING
from .zoo import available_models, load_model

__all__ = [
    "ARCHITECTURES",
    "UPSAMPLING",
    "SegNet",
    "architectures",
    "available_models",
    "build_from_config",
    "build_model",
    "load_model",
    "save_model",
]
