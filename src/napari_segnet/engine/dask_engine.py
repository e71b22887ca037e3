"""The tiling engine on a dask scheduler (threads, processes or a dask.distributed cluster).

Each dask block is one output chunk; it is computed from the chunk plus the model's
halo of neighbouring data (``dask.array.overlap``), mirrored at the image border only,
with chunk origins on the model's divisor grid. That is exactly what the in-memory
engine does, so both give the same result.
"""

from __future__ import annotations

import copy

import dask.array as da
import numpy as np

from .. import checks
from ..models.base import SegNet
from .axes import Layout, make_layout
from .devices import resolve_device
from .geometry import border_pad, plan_tiles, roundup
from .normalize import normalization_stats
from .plan import PRECISIONS, Plan, tile_reader
from .runner import run_tiles
from .sinks import ArraySink


def _axis_chunks(n: int, chunk: int, minimum: int) -> tuple[int, ...]:
    sizes = [chunk] * (n // chunk)
    if n % chunk:
        sizes.append(n % chunk)
    if len(sizes) > 1 and sizes[-1] < minimum:
        last = sizes.pop()
        sizes[-1] += last
    return tuple(sizes)


def predict_dask(
    image,
    model: SegNet,
    axes: str | None = None,
    *,
    chunk_size: int | None = None,
    batch_size: int = 1,
    device="auto",
    precision: str = "auto",
    border: int | None = None,
) -> da.Array:
    """Lazy class probabilities as a dask array, one task per output chunk.

    Parameters
    ----------
    image : array-like
        A dask array (or anything ``dask.array.asarray`` takes: numpy, zarr).
    model : SegNet
        The network; it travels to the workers with the task graph.
    axes : str, optional
        As in :func:`napari_segnet.predict`.
    chunk_size : int, optional
        Spatial chunk edge of the output (rounded to the model's divisor and at least
        its halo); default 1024 for 2D models, 128 for 3D.
    batch_size, device, precision, border
        As in :func:`napari_segnet.predict`, applied on each worker.

    Returns
    -------
    dask.array.Array
        float32 ``(n_classes, *shape without the channel axis)``; compute it, or store
        it with ``.to_zarr``, on any scheduler.

    Raises
    ------
    SegNetError
        For a bad image or parameter, when the graph is built; NaN or infinite
        values are found when the blocks are computed.
    """
    checks.model(model)
    x = checks.array(image, "image")
    chunk_size = checks.integer("chunk_size", chunk_size, low=1, optional=True)
    batch_size = checks.integer("batch_size", batch_size, low=1)
    resolve_device(device)  # checked here; each worker resolves it again for itself
    checks.one_of("precision", precision, PRECISIONS)
    border = checks.integer("border", border, low=0, optional=True)
    checks.finite(x, "image")
    x = x if isinstance(x, da.Array) else da.asarray(x)
    layout = make_layout(tuple(x.shape), axes, model.dims, model.in_channels)
    stats = normalization_stats(x, layout, model.meta.get("normalization"))
    # Canonical order: outer axes, channel, spatial axes.
    if layout.channel is None:
        x = x[None]
        shift = 1
        chan = 0
    else:
        shift = 0
        chan = layout.channel
    order = [a + shift for a in layout.outer] + [chan] + [a + shift for a in layout.spatial]
    xc = x.transpose(order)
    letters = "".join(layout.axes[a] for a in layout.outer) + "C"
    letters += "".join(layout.axes[a] for a in layout.spatial)
    canon = make_layout(tuple(xc.shape), letters, model.dims, model.in_channels)
    n_out = len(layout.outer)
    h, d = model.halo, model.divisor
    edge = chunk_size or (1024 if model.dims == 2 else 128)
    edge = max(roundup(int(edge), d), roundup(h + d, d))
    chunks = (*tuple((1,) * s for s in canon.outer_shape), (canon.n_channels,))
    # Every chunk holds the halo its neighbours read, and the last one also what the
    # mirror at the far border reads.
    chunks += tuple(_axis_chunks(s, edge, h + d) for s in canon.spatial_shape)
    xc = xc.rechunk(chunks)
    # Only axes split into several chunks need their neighbours' halo (an axis in one
    # chunk, shorter than the halo, is mirrored within the block).
    depth = {i: (h if i > n_out and len(xc.chunks[i]) > 1 else 0) for i in range(xc.ndim)}
    g = da.overlap.overlap(xc, depth=depth, boundary="none") if any(depth.values()) else xc
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in xc.chunks]
    pad = border_pad(model, border)
    func = _BlockPredictor(model, canon, stats, starts, n_out, batch_size, device, precision, pad)
    out_chunks = (*xc.chunks[:n_out], (model.n_classes,), *xc.chunks[n_out + 1 :])
    probs = g.map_blocks(
        func, chunks=out_chunks, dtype=np.float32, meta=np.empty((0,) * xc.ndim, np.float32)
    )
    probs = da.moveaxis(probs, n_out, 0)
    # Back to the input's axis order (without C).
    canon_letters = letters.replace("C", "")
    perm = [0] + [1 + canon_letters.index(a) for a in layout.out_axes]
    return probs.transpose(perm)


class _BlockPredictor:
    """Callable for ``map_blocks``: one output chunk from its overlapped block."""

    def __init__(
        self, model, layout: Layout, stats, starts, n_out, batch_size, device, precision, pad
    ):
        # A private eval-mode copy: blocks run concurrently and must not share a
        # model whose train/eval flag another thread could flip.
        self.model = copy.deepcopy(model).cpu().eval()
        self.layout = layout
        self.stats = stats
        self.starts = starts
        self.n_out = n_out
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.pad = pad

    def __call__(self, block: np.ndarray, block_info=None) -> np.ndarray:
        loc = block_info[0]["chunk-location"]
        shape_out = block_info[None]["chunk-shape"]
        lay, n_out, h = self.layout, self.n_out, self.model.halo
        outer0 = tuple(int(self.starts[i][loc[i]]) for i in range(n_out))
        lo = tuple(int(self.starts[i][loc[i]]) for i in range(n_out + 1, block.ndim))
        size = shape_out[n_out + 1 :]
        hi = tuple(a + s for a, s in zip(lo, size))
        origin = tuple(max(0, a - h) for a in lo)
        outers = [tuple(a + b for a, b in zip(outer0, o)) for o in np.ndindex(*shape_out[:n_out])]
        core = tuple(roundup(s, self.model.divisor) for s in size)
        tiles, core = plan_tiles(
            lo, hi, core, self.model.divisor, outers, halo=h, pad=self.pad, shape=lay.spatial_shape
        )
        dev = resolve_device(self.device)
        plan = Plan(lay, self.stats, tiles, core, self.batch_size, dev, self.pad)
        out = np.zeros(shape_out, np.float32)
        read = tile_reader(block, plan, self.model, origin=origin, outer_offset=outer0)
        # The block's axes are (outer..., class, spatial...).
        sink = ArraySink(lay, out, class_axis=n_out, outer_offset=outer0, region_offset=lo)
        run_tiles(
            self.model,
            tiles,
            core,
            read,
            sink,
            device=dev,
            batch_size=self.batch_size,
            precision=self.precision,
        )
        return out
