"""Networks: UNet, DeConvNet and dilated nets, and the registry that builds them."""

from .base import SegNet
from .registry import ARCHITECTURES, architectures, build_from_config, build_model
from .unet import UPSAMPLING

__all__ = [
    "ARCHITECTURES",
    "UPSAMPLING",
    "SegNet",
    "architectures",
    "build_from_config",
    "build_model",
]
