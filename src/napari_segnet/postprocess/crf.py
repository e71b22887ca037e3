"""Dense CRF refinement (Krähenbühl & Koltun 2011) in torch, on the CPU or a GPU."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .. import checks
from ..engine.devices import resolve_device
from ..errors import Cancelled, SegNetError
from ..options import CRFOptions
from .buffers import empty
from .gaussian import STRIP, Stages, blur_rows, blurred_ones, gaussian_stages
from .lattice import PermutohedralLattice

# Called after each step (a lattice build or a mean-field iteration).
Step = Callable[[], None]

_DEFAULT = CRFOptions()
UNARY_CLIP = 1e-5  # as pydensecrf's unary_from_softmax


def intensity_scale(image: np.ndarray) -> np.ndarray:
    """Intensities in the 0-255 range that ``bilateral_srgb`` is measured in.

    8-bit images are used as they are (like pydensecrf). 16-bit and float images are
    mapped linearly so that their 0.1 and 99.9 percentiles become 0 and 255, per
    channel, so ``bilateral_srgb=13`` means the same contrast whatever the bit depth.
    """
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return img.astype(np.float32)
    x = img.astype(np.float32)
    flat = x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x.reshape(-1, 1)
    lo, hi = np.percentile(flat, [0.1, 99.9], axis=0)
    scale = 255.0 / np.maximum(hi - lo, 1e-6)
    return ((x - lo) * scale).astype(np.float32)


def _normalised_exp(x: torch.Tensor, ones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(x)`` in place and the reciprocal of its class sums ``(N, 1)``: the softmax
    without its division, which the callers fold into their own products.

    Every logit is at least log(UNARY_CLIP) (messages are non-negative), so unless
    some logit is large, exp cannot overflow or vanish for a whole row and no
    per-row maximum is needed. The sum is a matrix product, as reductions over a
    short last axis are slow on the CPU.
    """
    if float(x.max()) > 60.0:
        x.sub_(x.amax(1, keepdim=True))
    x.exp_()
    return x, torch.mm(x, ones).reciprocal_()


def _mean_field(
    unary: torch.Tensor,
    lattice: PermutohedralLattice,
    stages: Stages,
    spatial: tuple[int, ...],
    p: dict,
    step: Step,
) -> torch.Tensor:
    """``n_iter`` mean-field steps from ``unary`` ``(N, C)``; returns Q ``(N, C)``.
    ``step()`` is called after each.

    Each step runs chunk by chunk, so every pass over the pixels works on data that
    is still in cache and no full-size temporaries are allocated: the softmax and
    the splatting per lattice chunk, the lattice blur, then the Gaussian messages
    per strip of rows and the bilateral ones per lattice chunk.
    """
    n, c = unary.shape
    dev = unary.device
    g_norm = blurred_ones(spatial, stages).rsqrt()
    b_norm = lattice.filter(torch.ones(n, 1, device=dev)).clamp_(min=1e-20).rsqrt_()
    # Messages weighted by compatibility (the weights fold into the outer
    # normalisation), spelled out per class: products of equal shapes are several
    # times faster than broadcasts over a short last axis.
    g_out = empty((n, c), device=dev).copy_((p["gaussian_compat"] * g_norm).expand(n, c))
    b_out = empty((n, c), device=dev).copy_((p["bilateral_compat"] * b_norm).expand(n, c))
    ones = torch.ones(c, 1, device=dev)
    chunks = lattice.chunks
    biggest = max(b - a for a, b in chunks)
    rest = n // spatial[0]
    # On a GPU the whole image at once: there, launches cost more than memory.
    rows = max(1, STRIP // rest) if dev.type == "cpu" else spatial[0]
    x = empty((n, c), device=dev).copy_(unary)
    to_blur = empty((n, c), device=dev)
    part = empty((biggest, c), device=dev)
    for _ in range(int(p["n_iter"])):
        grid = lattice.grid(c, x)
        for i, (a, b) in enumerate(chunks):
            # Q = e * inv_sum, normalised for each kernel.
            e, inv_sum = _normalised_exp(x[a:b], ones)
            torch.mul(e, inv_sum * g_norm[a:b], out=to_blur[a:b])
            lattice.splat(i, torch.mul(e, inv_sum.mul_(b_norm[a:b]), out=part[: b - a]), grid)
        grid = lattice.blur(grid)
        for start in range(0, spatial[0], rows):
            stop = min(start + rows, spatial[0])
            a, b = start * rest, stop * rest
            blurred = blur_rows(to_blur, spatial, stages, start, stop)
            torch.addcmul(unary[a:b], g_out[a:b], blurred, out=x[a:b])
        for i, (a, b) in enumerate(chunks):
            message = lattice.slice(i, grid, part[: b - a])
            x[a:b].addcmul_(b_out[a:b], message)
        step()
    for a, b in chunks:
        e, inv_sum = _normalised_exp(x[a:b], ones)
        e.mul_(inv_sum)
    return x


def _check(image: np.ndarray, prob: np.ndarray) -> None:
    if prob.ndim < 3 or prob.shape[0] < 2:
        raise SegNetError(f"probabilities must be (C, Y, X) with C >= 2, not {prob.shape}")
    if not np.isfinite(prob).all() or (prob < 0).any():
        raise SegNetError("probabilities must be finite and non-negative")
    if min(prob.shape) == 0 or image.size == 0:
        raise SegNetError(f"the image is empty: probabilities {prob.shape}, image {image.shape}")
    if image.dtype.kind not in "biuf" or (image.dtype.kind == "f" and not np.isfinite(image).all()):
        raise SegNetError("the image must be numeric, without NaN or infinite values")


def _refine_one(
    img: np.ndarray, prob: np.ndarray, p: dict, dev: torch.device, step: Step
) -> np.ndarray:
    """One 2D slice (or one volume): ``img`` (*spatial[, C]), ``prob`` (C, *spatial).

    Works on ``(N, C)`` arrays (pixels by classes) throughout; ``step()`` follows
    the lattice build and each mean-field iteration.
    """
    spatial = tuple(prob.shape[1:])
    c = prob.shape[0]
    n = int(np.prod(spatial))
    q0 = torch.from_numpy(np.ascontiguousarray(prob, np.float32)).to(dev).reshape(c, n).T
    unary = torch.clamp(q0, min=UNARY_CLIP, out=empty((n, c), device=dev)).log_()
    # Gaussian (positions only): exact separable filtering.
    stages = gaussian_stages(p["gaussian_sxy"], dev, max(spatial))
    # Bilateral (positions and intensities): the permutohedral lattice.
    inten = torch.from_numpy(intensity_scale(img).reshape(n, -1)).to(dev)
    feats = empty((n, len(spatial) + inten.shape[1]), device=dev)
    for ax, size in enumerate(spatial):
        shape = [1] * len(spatial)
        shape[ax] = size
        line = torch.arange(size, device=dev, dtype=torch.float32) / p["bilateral_sxy"]
        feats[:, ax].view(spatial).copy_(line.reshape(shape))
    torch.div(inten, p["bilateral_srgb"], out=feats[:, len(spatial) :])
    del inten
    try:
        lattice = PermutohedralLattice(feats)
    except ValueError as e:
        raise SegNetError(
            f"bilateral_sxy={p['bilateral_sxy']:g} and bilateral_srgb={p['bilateral_srgb']:g} "
            "are too small for this image's size and intensity range (the lattice would be "
            "too large); use larger kernel widths"
        ) from e
    del feats
    step()
    q = _mean_field(unary, lattice, stages, spatial, p, step)
    out = np.empty((c, *spatial), np.float32)
    torch.from_numpy(out).view(c, n).copy_(q.T)
    return out


def check_foreground(foreground, n_classes: int) -> list[int]:
    """The sorted class indices of ``foreground``: some, but not all, of the classes."""
    items = list(foreground) if isinstance(foreground, (list, tuple, np.ndarray)) else None
    fg = sorted({int(k) for k in items if checks.is_int(k)}) if items is not None else []
    if (
        not fg
        or len(fg) != len(set(items))
        or fg[0] < 0
        or fg[-1] >= n_classes
        or len(fg) == n_classes
    ):
        raise SegNetError(
            f"foreground must name some but not all of the {n_classes} classes "
            f"(indices 0 to {n_classes - 1}), not {foreground!r}"
        )
    return fg


def check_params(params: dict, n_classes: int) -> dict:
    """Check a dict of :func:`refine_crf` keyword arguments (as ``segment(crf=...)``
    takes them) before any work; returns it unchanged."""
    if not isinstance(params, dict):
        raise SegNetError(f"crf must be True, False or a dict, not {params!r}")
    options = {k: v for k, v in params.items() if k not in ("volume", "foreground")}
    CRFOptions.from_dict(options)
    checks.flag("volume", params.get("volume", False))
    if params.get("foreground") is not None:
        check_foreground(params["foreground"], n_classes)
    return params


def _merge(prob: np.ndarray, foreground) -> tuple[np.ndarray, list[int], list[int], np.ndarray]:
    """The other classes, then ``foreground``'s classes summed, ``(C', ...)``; the
    other and the foreground classes' indices; each pixel's split among the latter
    ``(F, ...)``."""
    c = prob.shape[0]
    fg = check_foreground(foreground, c)
    rest = [k for k in range(c) if k not in fg]
    part = prob[fg].astype(np.float32)
    total = part.sum(0)
    # Where the classes have no probability at all, an even split.
    share = np.divide(part, total, out=np.full_like(part, 1 / len(fg)), where=total > 0)
    merged = np.concatenate([prob[rest].astype(np.float32), total[None]])
    return merged, rest, fg, share


def refine_crf(
    image,
    probabilities,
    n_iter: int = _DEFAULT.n_iter,
    gaussian_sxy: float = _DEFAULT.gaussian_sxy,
    gaussian_compat: float = _DEFAULT.gaussian_compat,
    bilateral_sxy: float = _DEFAULT.bilateral_sxy,
    bilateral_srgb: float = _DEFAULT.bilateral_srgb,
    bilateral_compat: float = _DEFAULT.bilateral_compat,
    *,
    volume: bool = False,
    device="auto",
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    foreground: Sequence[int] | None = None,
) -> np.ndarray:
    """Refine class probabilities with a fully connected CRF so borders follow image edges.

    Mean-field inference (``n_iter`` steps) in the CRF of Krähenbühl & Koltun (2011):
    the given probabilities are the unary term (as pydensecrf's ``unary_from_softmax``),
    and the Potts pairwise term has a Gaussian kernel over positions
    (``gaussian_sxy``, weight ``gaussian_compat``) and a bilateral kernel over
    positions and intensities (``bilateral_sxy``, ``bilateral_srgb``, weight
    ``bilateral_compat``), both normalised symmetrically; the parameters mean what
    pydensecrf's ``addPairwiseGaussian``/``addPairwiseBilateral`` parameters mean.
    The Gaussian kernel is filtered exactly; the bilateral one with a permutohedral
    lattice, as in pydensecrf.

    Parameters
    ----------
    image : array-like
        ``(Y, X)`` grey, ``(Y, X, channels)`` RGB or multi-channel; stacks ``(Z, Y, X)``
        or ``(Z, Y, X, channels)`` are refined slice by slice (or as one volume with
        ``volume=True``). Intensities: 8-bit as they are; 16-bit and float mapped
        so their 0.1 and 99.9 percentiles span 0-255 (see :func:`intensity_scale`).
    probabilities : array-like
        ``(C, Y, X)`` (or ``(C, Z, Y, X)`` for stacks), e.g. ``segment(...).probabilities``.
    n_iter : int
        Mean-field iterations.
    gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat : float
        Kernel widths (pixels, intensity units) and weights.
    volume : bool
        Refine a stack as one 3D volume instead of per slice.
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    progress : callable, optional
        ``progress(done, total)`` in steps: per slice (or volume), building its
        lattice and each mean-field iteration.
    cancel : threading.Event, optional
        Set it to stop with :class:`~napari_segnet.errors.Cancelled` (checked after
        every step).
    foreground : sequence of int, optional
        Classes refined together, as one class against the others; each pixel keeps
        the given probabilities' split among them. For instance probabilities
        (background, interior, boundary) ``foreground=(1, 2)`` lets the CRF move
        object outlines to edges without smoothing away the thin boundary class that
        separates touching objects (``segment(..., crf=True)`` does this for instance
        models).

    Returns
    -------
    numpy.ndarray
        Refined float32 probabilities shaped like ``probabilities``. Inputs are not
        modified.

    Raises
    ------
    SegNetError
        For bad parameters, or an image and probabilities that do not match.
    Cancelled
        When ``cancel`` is set.
    """
    img = np.asarray(checks.array(image, "image"))
    prob = np.asarray(checks.array(probabilities, "probabilities"))
    checks.flag("volume", volume)
    checks.callback("progress", progress)
    checks.cancel_event(cancel)
    params = CRFOptions(
        n_iter=n_iter,
        gaussian_sxy=gaussian_sxy,
        gaussian_compat=gaussian_compat,
        bilateral_sxy=bilateral_sxy,
        bilateral_srgb=bilateral_srgb,
        bilateral_compat=bilateral_compat,
    ).to_dict()
    _check(img, prob)
    checks.finite(img, "image")
    spatial = prob.shape[1:]
    if img.shape == spatial:
        has_channels = False
    elif img.ndim == len(spatial) + 1 and img.shape[:-1] == spatial:
        has_channels = True
    else:
        raise SegNetError(
            f"image {img.shape} does not match probabilities {prob.shape}: the image must be "
            "the probabilities' spatial shape, optionally with channels last"
        )
    if len(spatial) not in (2, 3):
        raise SegNetError("refine_crf takes 2D images or stacks of them")
    unary = prob
    if foreground is not None:
        unary, rest, fg, share = _merge(prob, foreground)
    dev = resolve_device(device)
    if not has_channels:
        img = img[..., None]
    whole = len(spatial) == 2 or volume
    n_slices = 1 if whole else spatial[0]
    total = n_slices * (int(n_iter) + 1)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"CRF cancelled after {done} of {total} steps")

    if cancel is not None and cancel.is_set():
        raise Cancelled("CRF cancelled before it started")
    if progress is not None:
        progress(0, total)
    if whole:
        q = _refine_one(img, unary, params, dev, step)
    else:
        q = np.empty(unary.shape, np.float32)
        for z in range(spatial[0]):
            q[:, z] = _refine_one(img[z], unary[:, z], params, dev, step)
    if foreground is None:
        return q
    out = np.empty(prob.shape, np.float32)
    out[rest] = q[:-1]
    out[fg] = q[-1] * share
    return out
