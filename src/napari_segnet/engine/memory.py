"""How much memory a tile needs, and the largest tile that fits a device."""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Sequence

import numpy as np
import psutil
import torch

from ..models.base import SegNet
from .geometry import roundup

# Per input pixel: activation bytes, and the elements of the largest single activation;
# measured once per model (weakly held: models come and go).
_PROBED: weakref.WeakKeyDictionary[SegNet, tuple[float, float]] = weakref.WeakKeyDictionary()
# Convolution kernels index a tensor with 32-bit integers: a tile's largest activation
# must stay below this many elements, however much memory the device has.
MAX_ELEMENTS = 2**31 - 1


def activation_bytes_per_pixel(model: SegNet) -> float:
    """Estimate the inference memory a model needs per input pixel (float32).

    Measured once per model by summing the outputs of every leaf module on a
    small input; half of that sum bounds what is alive at once in practice.
    """
    return _probe(model)[0]


def widest_activation_per_pixel(model: SegNet) -> float:
    """Elements of the model's largest single activation, per input pixel."""
    return _probe(model)[1]


def _probe(model: SegNet) -> tuple[float, float]:
    cached = _PROBED.get(model)
    if cached is not None:
        return cached
    side = max(2 * model.divisor, 32 if model.dims == 2 else 16)
    x = torch.zeros((1, model.in_channels) + (side,) * model.dims)
    total = [0]
    widest = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()
            widest[0] = max(widest[0], out.numel())

    probe = copy.deepcopy(model).cpu().eval()
    for m in probe.modules():
        # TorchScript modules (from bioimage.io packages) take no hooks: not counted.
        if not list(m.children()) and not isinstance(m, torch.jit.ScriptModule):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        probe(x)
    pixels = side**model.dims
    value = (max(4.0 * total[0] / pixels * 0.5, 64.0), widest[0] / pixels)
    _PROBED[model] = value
    return value


def memory_budget(device: torch.device) -> int:
    """Bytes that one batch of tiles may use on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    avail = psutil.virtual_memory().available
    return int(min(avail * 0.3, 8 * 2**30))


def choose_core(
    spatial_shape: Sequence[int],
    model: SegNet,
    budget: int,
    bytes_factor: float = 1.0,
    pad: int | None = None,
) -> tuple[int, ...]:
    """Largest tile centre (multiples of the divisor) whose tile fits ``budget`` bytes.

    Starts from one tile for the whole image and splits the longest axis into more
    tiles (equal parts) until one tile fits: few, large tiles waste least on halos.
    A tile also stays small enough for 32-bit indexing of its largest activation
    (:data:`MAX_ELEMENTS`), which a large GPU's memory alone would not ensure.
    """
    d, h = model.divisor, model.halo
    pad = h if pad is None else pad
    bpp = activation_bytes_per_pixel(model) * bytes_factor
    parts = [1] * len(spatial_shape)
    min_core = d * max(1, 64 // d) if model.dims == 2 else d * max(1, 16 // d)

    def cores():
        return [
            max(roundup(math.ceil(s / p), d), min(min_core, roundup(s, d)))
            for s, p in zip(spatial_shape, parts)
        ]

    widest = widest_activation_per_pixel(model)
    while True:
        c = cores()
        pixels = tile_pixels(c, spatial_shape, model, pad)
        if pixels * bpp <= budget and pixels * widest <= MAX_ELEMENTS:
            return tuple(c)
        k = int(np.argmax(c))
        if c[k] <= min_core:
            return tuple(c)  # as small as useful; OOM handling takes over on CUDA
        parts[k] += 1


def tile_pixels(core: Sequence[int], shape: Sequence[int], model: SegNet, pad: int) -> int:
    """Input pixels of the largest tile: centre plus halo, at most the padded image."""
    d, h = model.divisor, model.halo
    return math.prod(min(c + 2 * h, roundup(s, d) + 2 * pad) for c, s in zip(core, shape))
