"""The exact Gaussian kernel of the dense CRF: separable, staged, blurred in strips.

The CRF's spatial (Gaussian) kernel is filtered exactly, not through the lattice: a
separable depthwise convolution, a wide kernel in two stages, a few rows at a time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Pixels per strip of the Gaussian blur: few enough that the convolutions' outputs
# come from reused memory, enough that each call has work to spread over the cores.
STRIP = 2**18


def gaussian_1d(sigma: float, device, radius: int | None = None) -> torch.Tensor:
    r = max(1, int(np.ceil(4 * sigma)) if radius is None else radius)
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    return torch.exp(-(t * t) / (2 * sigma * sigma))


Stages = list[tuple[torch.Tensor, int]]


def gaussian_stages(sigma: float, device, extent: int | None = None) -> Stages:
    """A 1D Gaussian of ``sigma`` (4 sigma support) as ``(kernel, dilation)`` stages
    applied one after the other, with the least work for an image at most
    ``extent`` pixels long on every axis.

    A wide Gaussian is a narrow one of width ``s`` followed by one of width
    ``sqrt(sigma**2 / s**2 - 1)`` sampled every ``s`` pixels (variances add). The
    first one smooths the second one's comb: by Poisson summation the ripple is
    exp(-2 pi**2) ~ 3e-9 of the result, so the filter stays the sampled Gaussian while
    its cost grows with sqrt(sigma) instead of sigma. A single kernel is cut at the
    image's extent, where its further taps would only meet the zeros outside.
    """
    radius = int(np.ceil(4 * sigma))
    if extent is not None:
        radius = max(1, min(radius, extent - 1))
    best = [(gaussian_1d(sigma, device, radius), 1)]
    work = 2.0 * radius + 1
    # The taps, about 8 s + 8 sigma / s, are fewest near s = sqrt(sigma).
    for s in range(2, min(int(sigma), 2 * int(np.sqrt(sigma)) + 2) + 1):
        wide = float(np.sqrt(sigma**2 / s**2 - 1))
        if wide < 1:
            continue
        wide_radius = int(np.ceil(4 * wide))
        # The first stage also fills the second one's reach beyond the image.
        spread = 1 + 2 * s * wide_radius / extent if extent else 1
        cost = (8 * s + 1) * spread + 2 * wide_radius + 1
        if cost < work:
            best = [(gaussian_1d(s, device), 1), (gaussian_1d(wide, device), s)]
            work = cost
    return best


def reach(stages: Stages) -> int:
    """How far (pixels) the staged filter reaches on each side."""
    return sum(d * (len(k) - 1) // 2 for k, d in stages)


def blur_rows(
    x: torch.Tensor, spatial: tuple[int, ...], stages: Stages, start: int, stop: int
) -> torch.Tensor:
    """Separable Gaussian of ``(N, C)`` values on a grid of ``spatial`` shape (zeros
    outside), for the rows ``start:stop`` of the first axis only: ``(rows * rest, C)``.

    Blurring a few rows at a time keeps the convolutions' outputs small (fresh large
    arrays cost a page fault per 4 kB) and in cache. ``(N, C)`` is the channels-last
    layout, in which oneDNN's depthwise convolutions are several times faster than
    channels-first; it is also the lattice's layout. Along each axis the first stage
    pads by the whole filter's reach and the later ones add none, so intermediate
    results extend beyond the image as the zero-padded filter needs.
    """
    c = x.shape[1]
    dims = len(spatial)
    r = reach(stages)
    # Input rows that reach the output rows; zero padding only at the image's ends.
    lo, hi = max(0, start - r), min(spatial[0], stop + r)
    pad = max(r - (start - lo), r - (hi - stop))
    rest = int(np.prod(spatial[1:]))
    # A channels-last view with a proper batch stride (oneDNN's fast path needs it).
    y = x[lo * rest : hi * rest].reshape(1, hi - lo, *spatial[1:], c).movedim(-1, 1)
    conv = {2: F.conv2d, 3: F.conv3d}[dims]
    for ax in range(dims):
        for i, (kernel, dilation) in enumerate(stages):
            shape = [1, 1] + [1] * dims
            shape[2 + ax] = len(kernel)
            padding = [0] * dims
            if i == 0:
                padding[ax] = pad if ax == 0 else r
            dilations = [1] * dims
            dilations[ax] = dilation
            weight = kernel.reshape(shape).expand(c, *shape[1:]).contiguous()
            y = conv(y, weight, padding=tuple(padding), dilation=tuple(dilations), groups=c)
        if ax == 0:
            first = start - lo + pad - r
            y = y[:, :, first : first + stop - start]
    return y[0].movedim(0, -1).reshape(-1, c)


def blurred_ones(spatial: tuple[int, ...], stages: Stages) -> torch.Tensor:
    """The staged blur of an image of ones, ``(N, 1)``: the product of 1D blurs along
    each axis."""
    r = reach(stages)
    dev = stages[0][0].device
    out = torch.ones((), device=dev)
    for ax, size in enumerate(spatial):
        line = torch.ones(1, 1, size, device=dev)
        for i, (kernel, dilation) in enumerate(stages):
            weight = kernel.reshape(1, 1, -1)
            line = F.conv1d(line, weight, padding=r if i == 0 else 0, dilation=dilation)
        shape = [1] * len(spatial)
        shape[ax] = size
        out = out * line.reshape(shape)
    return out.reshape(-1, 1)
