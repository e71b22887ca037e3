"""One block of a blockwise segmentation job, as a function a dask worker can run.

Each block reads its region plus a margin (``label_halo``) from the image, predicts
it with the tiling engine (the network's own halo read from the neighbouring data,
mirrored only at the image border, so the probabilities are those of a whole-image
run), and labels it. It writes only its own output chunks: the class ids, and the
instance labels in block-local numbering with a table that names each object by its
*anchor*, the first of its deciding pixels (seeds) in raster order, as a position in
the whole image. Every block that sees an object whole finds the same anchor, so after
all blocks a second, cheap pass numbers objects by the rank of their anchor: the same
object gets the same id in every block, whatever order the blocks ran in.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from ..io.job_state import JobState
from ..models.base import SegNet
from ..options import InstanceOptions
from ..postprocess.instances import label_with_seeds
from .axes import Layout, make_layout
from .devices import resolve_device
from .geometry import plan_tiles, roundup
from .plan import Plan, tile_reader
from .runner import run_tiles
from .sinks import ArraySink, class_ids


@dataclass(frozen=True)
class BlockSpec:
    """Everything a worker needs for any block of one job (small and picklable).

    Attributes
    ----------
    image : str
        Path of the input array (the chosen level), opened read-only.
    shape : tuple of int
        Its shape.
    axes : str
        The image's axis letters.
    dims, in_channels : int
        The model's spatial dimensions and input channels.
    stats : numpy.ndarray
        Normalisation offsets and scales of the whole image.
    block : tuple of int
        Block edge per spatial axis of the model (multiples of its divisor).
    label_halo : int
        Margin of neighbouring data each block labels with (a multiple of the divisor).
    pad : int
        Mirror padding at the image border.
    semantic : str
        Path of the class-id array (level 0 of the semantic label).
    local : str or None
        Path of the block-local instance array (None: no instances).
    job : str
        The job folder (block records).
    options : dict
        :class:`~napari_segnet.options.InstanceOptions` fields.
    device, precision, batch_size
        As in :func:`napari_segnet.predict`.
    """

    image: str
    shape: tuple[int, ...]
    axes: str
    dims: int
    in_channels: int
    stats: np.ndarray
    block: tuple[int, ...]
    label_halo: int
    pad: int
    semantic: str
    local: str | None
    job: str
    options: dict
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 1


def spec_layout(spec: BlockSpec) -> Layout:
    """The image's layout: which axes the blocks split, which are outer."""
    return make_layout(tuple(spec.shape), spec.axes, spec.dims, spec.in_channels)


def block_grid(layout: Layout, block: tuple[int, ...]) -> tuple[int, ...]:
    """Blocks per outer axis and per spatial axis."""
    spatial = tuple(-(-s // b) for s, b in zip(layout.spatial_shape, block))
    return (*layout.outer_shape, *spatial)


def block_region(layout: Layout, block: tuple[int, ...], index: int):
    """Block ``index``'s outer position and spatial ``[lo, hi)``."""
    grid = block_grid(layout, block)
    pos = np.unravel_index(index, grid)
    n_out = len(layout.outer_shape)
    outer = tuple(int(p) for p in pos[:n_out])
    lo = tuple(int(p) * b for p, b in zip(pos[n_out:], block))
    hi = tuple(min(a + b, s) for a, b, s in zip(lo, block, layout.spatial_shape))
    return outer, lo, hi


def label_index(layout: Layout, outer, lo, hi) -> tuple:
    """Index of a block in a label array laid out like the image (channel axis of 1)."""
    idx: list = [0] * len(layout.axes)
    for ax, o in zip(layout.outer, outer):
        idx[ax] = o
    for ax, a, b in zip(layout.spatial, lo, hi):
        idx[ax] = slice(a, b)
    return tuple(idx)


_DEVICE_MODELS: dict = {}
_LOCK = threading.Lock()


def _on_device(model: SegNet, device):
    """The model in eval mode on ``device``, one copy per worker process and device."""
    dev = resolve_device(device)
    if dev.type == "cpu" and not model.training:
        return model, dev
    key = (id(model), str(dev))
    with _LOCK:
        if key not in _DEVICE_MODELS:
            import copy

            _DEVICE_MODELS[key] = (model, copy.deepcopy(model).to(dev).eval())
        return _DEVICE_MODELS[key][1], dev


def predict_region(src, layout: Layout, model: SegNet, spec: BlockSpec, outer, lo, hi):
    """``(C, *region)`` probabilities of ``[lo, hi)``, equal to a whole-image run's."""
    net, dev = _on_device(model, spec.device)
    size = tuple(b - a for a, b in zip(lo, hi))
    core = tuple(roundup(s, model.divisor) for s in size)
    tiles, core = plan_tiles(
        lo,
        hi,
        core,
        model.divisor,
        [outer],
        halo=model.halo,
        pad=spec.pad,
        shape=layout.spatial_shape,
    )
    plan = Plan(layout, spec.stats, tiles, core, spec.batch_size, dev, spec.pad)
    shape = [1] * len(layout.out_shape)
    for ax, s in zip(layout.spatial, size):
        shape[layout.out_position(ax)] = s
    out = np.zeros((model.n_classes, *shape), np.float32)
    sink = ArraySink(layout, out, class_axis=0, outer_offset=outer, region_offset=lo)
    read = tile_reader(src, plan, model)
    run_tiles(
        net,
        tiles,
        core,
        read,
        sink,
        device=dev,
        batch_size=spec.batch_size,
        precision=spec.precision,
    )
    return out.reshape((model.n_classes, *size))


def anchor_keys(lab: np.ndarray, decisive: np.ndarray, outer, origin, layout: Layout):
    """Per id 0..max: the image-wide raster index of the object's first deciding pixel.

    ``outer`` is the block's outer position and ``origin`` its region's first pixel.
    """
    full = (*layout.outer_shape, *layout.spatial_shape)
    n = int(lab.max())
    keys = np.full(n + 1, -1, np.int64)
    for mask in (lab > 0, decisive & (lab > 0)):  # deciding pixels win where present
        flat = np.flatnonzero(mask)
        ids, first = np.unique(lab.ravel()[flat], return_index=True)
        coords = np.unravel_index(flat[first], lab.shape)
        coords = [c + o for c, o in zip(coords, origin)]
        fixed = [np.full(len(ids), o, np.int64) for o in outer]
        keys[ids] = np.ravel_multi_index((*fixed, *coords), full)
    return keys


def run_block(spec: BlockSpec, model: SegNet, index: int) -> dict:
    """Compute block ``index``, write its chunks, then record it as done.

    Returns
    -------
    dict
        ``index``, ``objects`` (in the block's own numbering), ``pid`` and ``model``
        (the id of the model object used: one per worker process).
    """
    import zarr

    _limit_threads()
    src = zarr.open_array(spec.image, mode="r")
    layout = spec_layout(spec)
    outer, lo, hi = block_region(layout, spec.block, index)
    h = spec.label_halo if spec.local else 0
    elo = tuple(max(a - h, 0) for a in lo)
    ehi = tuple(min(b + h, s) for b, s in zip(hi, layout.spatial_shape))
    prob = predict_region(src, layout, model, spec, outer, elo, ehi)
    core = tuple(slice(a - e, b - e) for a, b, e in zip(lo, hi, elo))
    where = label_index(layout, outer, lo, hi)
    sem = zarr.open_array(spec.semantic, mode="r+")
    sem[where] = class_ids(prob[(slice(None), *core)]).astype(sem.dtype)
    ids = keys = np.zeros(0, np.int64)
    if spec.local:
        lab, decisive = label_with_seeds(prob, InstanceOptions(**spec.options))
        inner = lab[core]
        ids = np.unique(inner[inner > 0]).astype(np.int64)
        keys = anchor_keys(lab, decisive, outer, elo, layout)[ids]
        zarr.open_array(spec.local, mode="r+")[where] = inner.astype(np.int32)
    JobState(spec.job).record(index, ids=ids, keys=keys)
    return {"index": index, "objects": len(ids), "pid": os.getpid(), "model": id(model)}


def relabel_block(spec: BlockSpec, index: int, ranks: np.ndarray, out: str) -> None:
    """Write block ``index`` of the final instances (path ``out``): local ids become
    the rank of their anchor among all anchors (``ranks``, sorted) plus one."""
    import zarr

    layout = spec_layout(spec)
    outer, lo, hi = block_region(layout, spec.block, index)
    where = label_index(layout, outer, lo, hi)
    rec = JobState(spec.job).load(index)
    local = np.asarray(zarr.open_array(spec.local, mode="r")[where])
    lut = np.zeros(max(int(local.max(initial=0)), int(rec["ids"].max(initial=0))) + 1, np.int64)
    lut[rec["ids"]] = np.searchsorted(ranks, rec["keys"]) + 1
    zarr.open_array(out, mode="r+")[where] = lut[local].astype(np.int32)


def _limit_threads() -> None:
    """On a dask worker, torch uses the worker's threads, not every core of the node."""
    try:
        from distributed import get_worker

        n = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
