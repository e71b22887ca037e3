"""The overlap-tile inference engine (Ronneberger et al. 2015, Fig. 2).

The image is mirrored at its border only; inside, neighbouring tiles give each other
real context. Each tile is its valid centre (``core``) plus the model's ``halo`` on
every side, and tile origins sit on multiples of the model's ``divisor`` in the
coordinates of the mirror-padded image. With the halo at least the receptive-field
radius, every centre equals the untiled result, so tile size never changes the
output. Each centre is written once, straight into the outputs.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import psutil
import torch

from ..errors import Cancelled, SegNetError
from ..models.base import SegNet
from .axes import Layout, make_layout, read_region
from .devices import resolve_device
from .normalize import normalization_stats, outer_positions

Progress = Callable[[int, int], None] | None


def _roundup(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def axis_starts(a: int, b: int, core: int, divisor: int) -> tuple[list[int], int]:
    """Core starts covering ``[a, b)`` (``a`` a multiple of ``divisor``) with cores of ``core``.

    The last core is moved back so it ends at the next multiple of ``divisor`` past
    ``b`` instead of running far beyond the image: all tiles keep one shape (for
    batching) and every start stays on the divisor grid.
    """
    full = _roundup(b - a, divisor)
    core = min(_roundup(core, divisor), full)
    n = math.ceil((b - a) / core)
    starts = [a + i * core for i in range(n)]
    starts[-1] = min(starts[-1], a + full - core)
    return starts, core


@dataclass(frozen=True)
class Tile:
    """One tile: the input it reads, its centre, and which part of the centre it writes.

    All coordinates are image coordinates; the input may reach past the image
    border, where it is mirrored.
    """

    outer: tuple[int, ...]
    start: tuple[int, ...]  # centre start
    write_lo: tuple[int, ...]  # written region
    write_hi: tuple[int, ...]
    in_lo: tuple[int, ...]  # input region read (centre plus halo, cut at the padded border)
    in_hi: tuple[int, ...]

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.in_lo, self.in_hi))


def border_pad(model: SegNet, border: int | None = None) -> int:
    """Mirror padding at the image border: a multiple of the divisor, at most the halo.

    None: 32 px (at least two divisors). The whole halo (``border=model.halo``) gives
    every border pixel full mirrored context, as in the UNet paper; less is faster on
    small images, and beyond the padding the network sees its own zero padding.
    Either way the result is the same for every tile size.
    """
    d, h = model.divisor, model.halo
    if border is None:
        border = max(32, 2 * d)
    if border < 0:
        raise SegNetError("border must not be negative")
    return int(min(_roundup(int(border), d), h))


def plan_tiles(
    region_lo: Sequence[int],
    region_hi: Sequence[int],
    core: Sequence[int],
    divisor: int,
    outers: Sequence[tuple[int, ...]],
    *,
    halo: int,
    pad: int,
    shape: Sequence[int],
) -> tuple[list[Tile], tuple[int, ...]]:
    """All tiles that cover a region at every outer position, each pixel written once.

    A tile reads its centre plus ``halo`` on each side, but never beyond the padded
    image ``[-pad, roundup(shape, divisor) + pad)``: there the untiled pass would
    see the network's zero padding, so the tile stops there too and sees the same.
    Tiles are sorted by input shape, so equal shapes batch together.
    """
    per_axis, cores = [], []
    for a, b, c, n in zip(region_lo, region_hi, core, shape):
        starts, c = axis_starts(int(a), int(b), int(c), divisor)
        end = _roundup(int(n), divisor) + pad
        spans = []
        for i, st in enumerate(starts):
            lo = st if i == 0 else max(st, starts[i - 1] + c)
            spans.append(
                (st, lo, min(st + c, int(b)), max(st - halo, -pad), min(st + c + halo, end))
            )
        per_axis.append(spans)
        cores.append(c)
    tiles = []
    for o in outers:
        for combo in _product(per_axis):
            tiles.append(Tile(tuple(o), *(tuple(x[k] for x in combo) for k in range(5))))
    tiles.sort(key=lambda t: t.in_shape)
    return tiles, tuple(cores)


def _product(lists):
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for rest in _product(lists[1:]):
            yield (head, *rest)


# ----------------------------------------------------------------------------- memory


def activation_bytes_per_pixel(model: SegNet) -> float:
    """Estimate the inference memory a model needs per input pixel (float32).

    Measured once per model by summing the outputs of every leaf module on a
    small input; half of that sum bounds what is alive at once in practice.
    """
    cached = getattr(model, "_bytes_per_px", None)
    if cached is not None:
        return cached
    side = max(2 * model.divisor, 32 if model.dims == 2 else 16)
    x = torch.zeros((1, model.in_channels) + (side,) * model.dims)
    total = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()

    probe = copy.deepcopy(model).cpu().eval()
    for m in probe.modules():
        if not list(m.children()):
            m.register_forward_hook(hook)
    with torch.inference_mode():
        probe(x)
    value = max(4.0 * total[0] / side**model.dims * 0.5, 64.0)
    model._bytes_per_px = value
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
    """
    d, h = model.divisor, model.halo
    pad = h if pad is None else pad
    bpp = activation_bytes_per_pixel(model) * bytes_factor
    parts = [1] * len(spatial_shape)
    min_core = d * max(1, 64 // d) if model.dims == 2 else d * max(1, 16 // d)

    def cores():
        return [
            max(_roundup(math.ceil(s / p), d), min(min_core, _roundup(s, d)))
            for s, p in zip(spatial_shape, parts)
        ]

    while True:
        c = cores()
        size = tile_pixels(c, spatial_shape, model, pad) * bpp
        if size <= budget:
            return tuple(c)
        k = int(np.argmax(c))
        if c[k] <= min_core:
            return tuple(c)  # as small as useful; OOM handling takes over on CUDA
        parts[k] += 1


def tile_pixels(core: Sequence[int], shape: Sequence[int], model: SegNet, pad: int) -> int:
    """Input pixels of the largest tile: centre plus halo, at most the padded image."""
    d, h = model.divisor, model.halo
    return math.prod(min(c + 2 * h, _roundup(s, d) + 2 * pad) for c, s in zip(core, shape))


# ----------------------------------------------------------------------------- engine


@contextmanager
def _eval_on(model: SegNet, device: torch.device, channels_last: bool) -> Iterator[SegNet]:
    """The model in eval mode on ``device``, never changing the caller's model.

    A model already in eval mode on the device is used as it is (read-only, so
    threads can share it); otherwise a private copy is made, because flipping the
    caller's train/eval flag would race with other threads using the same model.
    """
    dev = next(model.parameters()).device
    if dev == device and not channels_last and not model.training:
        yield model
        return
    m = copy.deepcopy(model).to(device).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    yield m


class _TileTooLarge(Exception):
    pass


def _host_tensor(block: np.ndarray) -> torch.Tensor:
    """A raw block as a tensor without widening it on the host (less to copy to a GPU).

    uint16, the usual microscopy type, travels as its int16 bit pattern and is widened
    on the device (see :func:`_widen`); types torch lacks become float32 here.
    """
    if block.dtype == np.uint16:
        return torch.from_numpy(block.view(np.int16))
    if block.dtype in (np.uint32, np.uint64) or block.dtype.kind == "b":
        return torch.from_numpy(block.astype(np.float32))
    return torch.from_numpy(block)


def _widen(x: torch.Tensor, uint16: bool) -> torch.Tensor:
    if uint16:
        return (x.to(torch.int32) & 0xFFFF).to(torch.float32)
    return x.to(torch.float32)


class TileRunner:
    """Runs batches of raw tiles through a model and hands back the centres' probabilities.

    Tiles travel to the device in their own dtype and are normalised there. On CUDA
    a batch is only *launched* (copies and kernels queued, the result copied into
    pinned host memory behind an event), so the host can write the previous batch
    and read the next one while the GPU works; :meth:`collect` waits for it.
    """

    def __init__(self, model: SegNet, device: torch.device, precision: str = "auto"):
        self.model = model
        self.device = device
        self.cuda = device.type == "cuda"
        if precision == "auto":
            precision = (
                ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
                if self.cuda
                else "float32"
            )
        if precision not in ("float32", "bfloat16", "float16"):
            raise SegNetError("precision must be 'auto', 'float32', 'bfloat16' or 'float16'")
        self.precision = precision
        # Channels-last convolutions are faster on CUDA and also on the CPU (oneDNN).
        self.channels_last = model.dims == 2

    def autocast(self):
        if self.precision == "float32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    def _input(self, batch: np.ndarray, stats: np.ndarray) -> torch.Tensor:
        x = _host_tensor(batch)
        if self.cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = _widen(x, batch.dtype == np.uint16)
        st = torch.from_numpy(stats.astype(np.float32)).to(self.device)  # (B, C, 2)
        shape = (*st.shape[:2],) + (1,) * (x.ndim - 2)
        x = (x - st[..., 0].reshape(shape)) * st[..., 1].reshape(shape)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def launch(
        self,
        net: torch.nn.Module,
        batch: np.ndarray,
        stats: np.ndarray,
        offsets: list[tuple[int, ...]],
        core: Sequence[int],
    ) -> list:
        """Queue one batch: raw ``(B, C, ...)`` tiles with ``(B, C, 2)`` normalisation.

        Returns a handle for :meth:`collect`. CUDA out-of-memory halves the batch.
        """
        try:
            with torch.inference_mode(), self.autocast():
                logits = net(self._input(batch, stats))
                crops = []
                for i, off in enumerate(offsets):
                    crop = tuple(slice(o, o + c) for o, c in zip(off, core))
                    crops.append(torch.softmax(logits[(i, slice(None), *crop)].float(), dim=0))
                prob = torch.stack(crops)
                del logits
            if not self.cuda:
                return [(prob, None)]
            host = torch.empty(prob.shape, dtype=prob.dtype, pin_memory=True)
            host.copy_(prob, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return [(host, done)]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) == 1:
                raise _TileTooLarge() from None
            h = len(batch) // 2
            return self.launch(net, batch[:h], stats[:h], offsets[:h], core) + self.launch(
                net, batch[h:], stats[h:], offsets[h:], core
            )

    @staticmethod
    def collect(handle: list) -> list[np.ndarray]:
        """Wait for a launched batch; each tile's centre probabilities ``(C, *core)``."""
        out = []
        for prob, done in handle:
            if done is not None:
                done.synchronize()
            out.extend(prob.numpy())
        return out


def run_tiles(
    model: SegNet,
    tiles: list[Tile],
    core: Sequence[int],
    read: Callable[[Tile], tuple[np.ndarray, np.ndarray]],
    write: Callable[[Tile, np.ndarray], None],
    *,
    device: torch.device,
    batch_size: int,
    precision: str = "auto",
    progress: Progress = None,
    cancel: threading.Event | None = None,
) -> None:
    """Read, infer and write tiles batch by batch, overlapping the three.

    ``read`` gives a tile's raw ``(C, ...)`` input and its ``(C, 2)`` normalisation.
    The next batch is read on a thread while one runs; on CUDA the previous batch is
    written while the next one computes.

    Raises
    ------
    Cancelled
        When ``cancel`` is set (checked before each batch).
    """
    runner = TileRunner(model, device, precision)
    batches = []
    for _, group in itertools.groupby(tiles, key=lambda t: t.in_shape):
        group = list(group)
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    total = len(tiles)
    done = 0

    def load(batch: list[Tile]) -> tuple[np.ndarray, np.ndarray]:
        parts = [read(t) for t in batch]
        if len(parts) == 1:
            return parts[0][0][None], parts[0][1][None]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    def finish(batch: list[Tile], handle: list) -> None:
        nonlocal done
        for t, p in zip(batch, runner.collect(handle)):
            rel = tuple(slice(lo - s, hi - s) for lo, hi, s in zip(t.write_lo, t.write_hi, t.start))
            write(t, p[(slice(None), *rel)])
        done += len(batch)
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    in_flight = None
    with _eval_on(model, device, runner.channels_last) as net, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            if cancel is not None and cancel.is_set():
                pending.cancel()
                raise Cancelled(f"cancelled after {done} of {total} tiles")
            x, stats = pending.result()
            pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
            offsets = [tuple(a - b for a, b in zip(t.start, t.in_lo)) for t in batch]
            handle = runner.launch(net, x, stats, offsets, core)
            if in_flight is not None:
                finish(*in_flight)
            in_flight = (batch, handle)
        if in_flight is not None:
            finish(*in_flight)


# ----------------------------------------------------------------------------- public


def _as_source(image):
    """Keep numpy, zarr and dask arrays as they are (read lazily); turn the rest into numpy."""
    if hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__"):
        return image
    return np.asarray(image)


def check_image(src) -> None:
    """Refuse images that cannot be segmented, with a message that says why."""
    dt = np.dtype(src.dtype)
    if dt.kind not in "biuf":
        raise SegNetError(f"cannot segment an image of dtype {dt}; give a numeric array")
    if isinstance(src, np.ndarray) and src.size and dt.kind == "f" and np.isnan(src).any():
        raise SegNetError("the image contains NaN values; replace them before segmenting")


@dataclass
class Plan:
    """Everything the engine needs to run one image."""

    layout: Layout
    stats: np.ndarray
    tiles: list[Tile]
    core: tuple[int, ...]
    batch_size: int
    device: torch.device
    pad: int = 0


def make_plan(
    src,
    model: SegNet,
    axes: str | None,
    tile_size,
    batch_size: int | None,
    device,
    precision: str = "auto",
    border: int | None = None,
) -> Plan:
    """Check the input, compute normalisation, and lay out tiles and batches."""
    if not isinstance(model, SegNet):
        raise SegNetError("model must be a napari-segnet model (build_model, load_model or train)")
    check_image(src)
    layout = make_layout(tuple(src.shape), axes, model.dims, model.in_channels)
    dev = resolve_device(device)
    stats = normalization_stats(src, layout, model.meta.get("normalization"))
    shape = layout.spatial_shape
    factor = 0.5 if (dev.type == "cuda" and precision != "float32") else 1.0
    budget = memory_budget(dev)
    pad = border_pad(model, border)
    if tile_size is None:
        core = choose_core(shape, model, budget, factor, pad)
    else:
        ts = (tile_size,) * model.dims if np.isscalar(tile_size) else tuple(tile_size)
        if len(ts) != model.dims or min(ts) < 1:
            raise SegNetError(
                f"tile_size must be a positive int or {model.dims} ints, not {tile_size!r}"
            )
        core = tuple(_roundup(int(t), model.divisor) for t in ts)
    outers = list(outer_positions(layout))
    tiles, core = plan_tiles(
        (0,) * model.dims, shape, core, model.divisor, outers, halo=model.halo, pad=pad, shape=shape
    )
    tile_bytes = tile_pixels(core, shape, model, pad) * activation_bytes_per_pixel(model)
    if tile_bytes * factor > 4 * budget:
        raise SegNetError(
            f"one tile needs about {tile_bytes * factor / 2**30:.1f} GiB but only "
            f"{budget / 2**30:.1f} GiB are free on {dev}: the model's receptive field "
            f"(halo {model.halo} px) is too large for this device; use a smaller tile_size, "
            "or a model with smaller dilation rates / pool_size"
        )
    if batch_size is None:
        # On the CPU one large tile at a time is fastest (batches only add memory
        # traffic); accelerators get as many tiles as fit.
        fit = int(np.clip(budget // max(tile_bytes * factor, 1), 1, 32))
        batch_size = 1 if dev.type == "cpu" else fit
    if int(batch_size) < 1:
        raise SegNetError("batch_size must be at least 1")
    return Plan(layout, stats, tiles, core, int(min(batch_size, max(len(tiles), 1))), dev, pad)


def stats_at(stats: np.ndarray, outer: tuple[int, ...]) -> np.ndarray:
    return stats[outer] if outer else stats


def tile_reader(src, plan: Plan, model: SegNet, origin=None, outer_offset=None):
    """A function that reads one tile's raw input (mirrored past the border) and its
    ``(C, 2)`` normalisation offsets and scales."""

    def read(t: Tile) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = t.in_lo, t.in_hi
        o = t.outer if outer_offset is None else tuple(a - b for a, b in zip(t.outer, outer_offset))
        block = read_region(src, plan.layout, o, lo, hi, origin)
        if block.dtype.kind == "f" and np.isnan(block).any():
            raise SegNetError("the image contains NaN values; replace them before segmenting")
        return block, stats_at(plan.stats, t.outer)

    return read


def out_index(layout: Layout, t: Tile, outer_offset=None, region_offset=None) -> tuple:
    """Index of a tile's written region in an output laid out like ``layout.out_axes``."""
    n = len(layout.out_shape)
    idx: list = [slice(None)] * n
    for ax, i, k in zip(layout.outer, t.outer, range(len(t.outer))):
        idx[layout.out_position(ax)] = i - (outer_offset[k] if outer_offset else 0)
    for k, ax in enumerate(layout.spatial):
        off = region_offset[k] if region_offset else 0
        idx[layout.out_position(ax)] = slice(t.write_lo[k] - off, t.write_hi[k] - off)
    return tuple(idx)


def run_plan(
    src,
    model: SegNet,
    plan: Plan,
    *,
    probabilities=None,
    semantic=None,
    precision: str = "auto",
    progress: Progress = None,
    cancel: threading.Event | None = None,
) -> None:
    """Run a plan, writing into ``probabilities`` ``(C, *out_shape)`` and/or ``semantic``.

    On CUDA out-of-memory with a single tile, the tile centre is halved and the run
    starts again (centres already written are simply written again, identically).
    """
    layout = plan.layout
    assign = functools.partial(parallel_assign, probabilities)

    def write(t: Tile, p: np.ndarray) -> None:
        idx = out_index(layout, t)
        if probabilities is not None:
            assign((slice(None), *idx), p)
        if semantic is not None:
            semantic[idx] = p.argmax(0).astype(semantic.dtype, copy=False)

    while True:
        try:
            run_tiles(
                model,
                plan.tiles,
                plan.core,
                tile_reader(src, plan, model),
                write,
                device=plan.device,
                batch_size=plan.batch_size,
                precision=precision,
                progress=progress,
                cancel=cancel,
            )
            return
        except _TileTooLarge:
            smaller = tuple(max(model.divisor, _roundup(c // 2, model.divisor)) for c in plan.core)
            if smaller == plan.core:
                raise SegNetError(
                    "out of GPU memory even for the smallest tile; use device='cpu'"
                ) from None
            tiles, core = plan_tiles(
                (0,) * model.dims,
                layout.spatial_shape,
                smaller,
                model.divisor,
                list(outer_positions(layout)),
                halo=model.halo,
                pad=plan.pad,
                shape=layout.spatial_shape,
            )
            plan.tiles, plan.core, plan.batch_size = tiles, core, 1


_COPY_THREADS = min(8, os.cpu_count() or 1)
_COPY_POOL = ThreadPoolExecutor(_COPY_THREADS) if _COPY_THREADS > 1 else None


def parallel_assign(dst, index: tuple, src: np.ndarray) -> None:
    """``dst[index] = src``, split over threads for large numpy outputs.

    numpy releases the GIL while copying, and a GPU fills a tile faster than one
    thread can copy it (and fault in the fresh output pages) on the host.
    """
    axis = int(np.argmax(src.shape))
    if _COPY_POOL is None or not isinstance(dst, np.ndarray) or src.size < 2**22:
        dst[index] = src
        return
    view = dst[index]
    bounds = np.linspace(0, src.shape[axis], _COPY_THREADS + 1).astype(int)

    def part(k: int) -> None:
        sel = (slice(None),) * axis + (slice(bounds[k], bounds[k + 1]),)
        view[sel] = src[sel]

    list(_COPY_POOL.map(part, range(_COPY_THREADS)))


def semantic_dtype(n_classes: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds class ids ``0..n_classes-1``."""
    return np.dtype(np.uint8 if n_classes <= 256 else np.uint16)


def predict(
    image,
    model: SegNet,
    axes: str | None = None,
    *,
    tile_size=None,
    batch_size: int | None = None,
    device="auto",
    precision: str = "auto",
    border: int | None = None,
    progress: Progress = None,
    cancel: threading.Event | None = None,
    out=None,
) -> np.ndarray:
    """Class probabilities of an image, computed tile by tile.

    Parameters
    ----------
    image : array-like
        numpy, dask or zarr array; 2D to 5D (see ``axes``).
    model : SegNet
        The network.
    axes : str, optional
        Letters from ``TZCYX`` (``S`` is read as ``C``), e.g. ``"YX"``, ``"ZYX"``,
        ``"TYX"``, ``"YXC"``; guessed if None (see :data:`napari_segnet.axes.GUESS_RULE`).
    tile_size : int or tuple of int, optional
        Size of each tile's valid centre (rounded up to the model's divisor); each
        tile adds the model's halo on every side. None picks the largest tile that
        fits the device's free memory.
    batch_size : int, optional
        Tiles per forward pass; None chooses from free memory.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    precision : str
        ``"auto"`` (bfloat16/float16 autocast on CUDA, float32 elsewhere) or a dtype name.
    border : int, optional
        Pixels of mirror padding at the image border (rounded up to the divisor, at
        most the halo; see :func:`border_pad`). None: 32 px.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)`` after each batch.
    cancel : threading.Event, optional
        Set it to stop; :class:`~napari_segnet.errors.Cancelled` is raised.
    out : array-like, optional
        A ``(C, *out_shape)`` float32 array (numpy or zarr) to write into.

    Returns
    -------
    numpy.ndarray
        float32 ``(n_classes, *shape without the channel axis)``, or ``out``.
    """
    src = _as_source(image)
    plan = make_plan(src, model, axes, tile_size, batch_size, device, precision, border)
    shape = (model.n_classes, *plan.layout.out_shape)
    if out is None:
        out = np.zeros(shape, np.float32)
    elif tuple(out.shape) != shape:
        raise SegNetError(f"out has shape {tuple(out.shape)}, expected {shape}")
    run_plan(
        src, model, plan, probabilities=out, precision=precision, progress=progress, cancel=cancel
    )
    return out
