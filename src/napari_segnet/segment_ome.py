"""``segment_ome_zarr``: an OME-Zarr image in, OME-NGFF labels out, block by block.

The job is resumable: finished blocks are recorded beside the outputs, a rerun with the
same settings computes only the others, and the result equals an uninterrupted run's.
The blocks run in this process or as tasks on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checks
from .engine.blockjob import BlockSpec, block_grid, relabel_block, run_block
from .engine.geometry import border_pad, roundup
from .engine.normalize import normalization_stats
from .engine.plan import PRECISIONS
from .engine.runner import Progress
from .engine.sinks import semantic_dtype
from .errors import Cancelled, SegNetError
from .io import ome_labels
from .io.job_state import JobState, check_writable, model_fingerprint
from .io.ome_zarr import read_ome_zarr
from .models.base import SegNet
from .postprocess import results

__all__ = ["OmeZarrResult", "segment_ome_zarr"]


@dataclass
class OmeZarrResult:
    """What :func:`segment_ome_zarr` returns.

    Attributes
    ----------
    store : Path
        The zarr group holding ``labels/`` (the input image, or the new store).
    labels : dict
        ``"semantic"`` and ``"instances"`` (when computed) to their label group paths.
    n_objects : int
        Instances found.
    n_blocks, n_resumed : int
        Blocks in the job, and those already done by an earlier run.
    info : dict
        Block size, label halo, level, pixel size, axes.
    """

    store: Path
    labels: dict
    n_objects: int
    n_blocks: int
    n_resumed: int
    info: dict = field(default_factory=dict)


def segment_ome_zarr(
    image,
    model: SegNet,
    output=None,
    *,
    level: int = 0,
    into_input: bool = False,
    name: str = "segnet",
    block_size: int | tuple[int, ...] | None = None,
    label_halo: int = 64,
    instances: bool | None = None,
    instance_options: dict | None = None,
    overwrite: bool = False,
    device="auto",
    precision: str = "auto",
    batch_size: int = 1,
    border: int | None = None,
    client=None,
    progress: Progress = None,
    cancel: threading.Event | None = None,
) -> OmeZarrResult:
    """Segment an OME-Zarr image block by block into OME-NGFF labels.

    Parameters
    ----------
    image : str or path
        The OME-Zarr image group; opened read-only.
    model : SegNet
        The network.
    output : str or path, optional
        A new zarr group for the labels (``OUTPUT/labels/<name>_semantic`` ...).
    level : int
        Resolution level to segment (0: full resolution).
    into_input : bool
        Write the labels into the image's own group instead (its ``labels/``; the
        image arrays are never touched).
    name : str
        Prefix of the label names: ``<name>_semantic`` and ``<name>_instances``.
    block_size : int or tuple, optional
        Block edge per spatial axis (default 1024 in 2D, 128 in 3D), rounded up to
        the network's divisor; the label arrays are chunked like the blocks.
    label_halo : int
        Context around each block for instance labelling, in pixels (rounded up to
        the divisor): at least the size of the largest cluster of touching objects.
    instances : bool, optional
        Compute instance labels; None: when the model was trained on instances.
    instance_options : dict, optional
        As in :func:`napari_segnet.segment`.
    overwrite : bool
        Replace existing labels of these names, or an unfinished job with other
        settings. Without it such labels are refused; an unfinished job with the
        same settings is resumed.
    device, precision, batch_size, border
        As in :func:`napari_segnet.predict`, on every worker.
    client : distributed.Client, optional
        Run the blocks as tasks on this cluster (the model is sent to each worker
        once); the image and output must be on storage the workers see.
    progress : callable, optional
        ``progress(done, total)`` in blocks.
    cancel : threading.Event, optional
        Stops after the current block with :class:`~napari_segnet.errors.Cancelled`;
        the job can be resumed.

    Returns
    -------
    OmeZarrResult

    Raises
    ------
    SegNetError
        For an input that is not OME-Zarr, a bad level or parameter, an output that
        exists (without ``overwrite``), a read-only output location, or a Mask R-CNN
        model (its objects are not stitched block by block).
    """
    import zarr

    checks.model(model)
    if model.arch == "maskrcnn":
        raise SegNetError(
            "Mask R-CNN models are not run block by block on OME-Zarr images: read a level "
            "into memory (napari_segnet.io.ome_zarr.read_ome_zarr(path, level).data) and "
            "pass it to segment, which tiles it; or use a UNet model here"
        )
    img = read_ome_zarr(image, level)
    if into_input == (output is not None):
        raise SegNetError("give either output= (a new store) or into_input=True, not both")
    if not isinstance(name, str) or not name.isidentifier():
        raise SegNetError(f"name must be a plain word (letters, digits, _), not {name!r}")
    checks.one_of("precision", precision, PRECISIONS)
    batch_size = checks.integer("batch_size", batch_size, low=1)
    label_halo = checks.integer("label_halo", label_halo, low=0)
    checks.callback("progress", progress)
    checks.cancel_event(cancel)
    block = checks.sizes("block_size", block_size, model.dims)
    d = model.divisor
    least = roundup(max(getattr(model, "min_size", 1), d), d)
    block = tuple(
        max(roundup(b, d), least)
        for b in (block or (1024 if model.dims == 2 else 128,) * model.dims)
    )
    label_halo = roundup(label_halo, d)
    layout = spec_layout_of(img, model)
    if instances is None:
        instances = model.metadata.target == "instances"
    options = results.instance_options(model, instance_options)
    options.pop("ndim")

    store = img.path if into_input else Path(output)
    if not into_input and store.resolve() == img.path.resolve():
        raise SegNetError("output is the input image; use into_input=True to add labels to it")
    check_writable(store)
    fmt = ome_labels.ngff_format(img.version)
    if into_input:
        root = zarr.open_group(str(store), mode="r+")
    else:
        root = zarr.open_group(str(store), mode="a", zarr_format=fmt.zarr_format)
    names = {"semantic": f"{name}_semantic"}
    if instances:
        names["instances"] = f"{name}_instances"
    job = JobState(store / "labels" / f"{name}.job")
    settings = {
        "image": str(img.path.resolve()),
        "level": level,
        "shape": list(img.data.shape),
        "model": model_fingerprint(model),
        "block": list(block),
        "label_halo": label_halo,
        "options": options,
        "names": names,
    }
    resumed = _prepare(root, job, settings, names, overwrite)
    spatial_letters = [layout.axes[a] for a in layout.spatial]
    lay = ome_labels.LabelsLayout.of(img, dict(zip(spatial_letters, block)))
    if not resumed:
        job.start(settings)
    for kind, label in names.items():
        if not _created(root, label, lay.n_levels):
            dtype = semantic_dtype(model.n_classes) if kind == "semantic" else np.int32
            ome_labels.create_label(root, label, lay, dtype)
    local = str(job.folder / "local.zarr") if instances else None
    if local and not Path(local).exists():
        zarr.create_array(local, shape=lay.shape, chunks=lay.chunks, dtype=np.int32, fill_value=0)
    stats = normalization_stats(img.data, layout, model.meta.get("normalization"))
    spec = BlockSpec(
        image=str(img.path / img.array_path),
        shape=tuple(int(s) for s in img.data.shape),
        axes=img.axes,
        dims=model.dims,
        in_channels=model.in_channels,
        stats=stats,
        block=block,
        label_halo=label_halo,
        pad=border_pad(model, border),
        semantic=str(store / "labels" / names["semantic"] / "0"),
        local=local,
        job=str(job.folder),
        options=options,
        device=str(device),
        precision=precision,
        batch_size=batch_size,
    )
    total = int(np.prod(block_grid(layout, block)))
    done = job.done()
    todo = [i for i in range(total) if i not in done]
    reports = _run(client, model, spec, todo, total - len(todo), total, progress, cancel)
    n_objects = 0
    if instances:
        n_objects = _relabel(
            client, spec, total, job, str(store / "labels" / names["instances"] / "0")
        )
    classes = list(model.metadata.classes or [f"class {i}" for i in range(model.n_classes)])
    source = {"image": "../../"} if into_input else None
    for kind, label in names.items():
        ome_labels.fill_pyramid(root["labels"][label], lay)
        ome_labels.publish_label(
            root,
            label,
            lay,
            img.version,
            classes=classes if kind == "semantic" else None,
            source=source,
        )
    job.remove()
    models: dict[int, set] = {}
    for r in reports:
        models.setdefault(r["pid"], set()).add(r["model"])
    info = {
        # Model copies each worker process used (1: sent once, not per block).
        "models_per_worker": {pid: len(ids) for pid, ids in models.items()},
        "block": block,
        "label_halo": label_halo,
        "level": level,
        "axes": img.axes,
        "scale": img.scale,
        "anisotropy": img.anisotropy,
    }
    paths = {k: store / "labels" / v for k, v in names.items()}
    return OmeZarrResult(store, paths, n_objects, total, len(done), info)


def spec_layout_of(img, model: SegNet):
    """The image's layout for ``model`` (a channel axis must match the model's input)."""
    from .engine.axes import make_layout

    return make_layout(tuple(img.data.shape), img.axes, model.dims, model.in_channels)


def _created(root, label: str, n_levels: int) -> bool:
    """Whether every level array of ``labels/<label>`` exists (a resumed job's do)."""
    return (
        "labels" in root and label in root["labels"] and str(n_levels - 1) in root["labels"][label]
    )


def _prepare(root, job: JobState, settings: dict, names: dict, overwrite: bool) -> bool:
    """Decide between resuming and starting fresh; True to resume."""
    if job.exists and job.matches(settings) and not overwrite:
        return True
    existing = [n for n in names.values() if ome_labels.label_exists(root, n)]
    if job.exists and not overwrite:
        raise SegNetError(
            f"an unfinished job with other settings is in {job.folder}; rerun it with its "
            "settings to finish it, or use overwrite (--overwrite) to start again"
        )
    if existing and not overwrite:
        raise SegNetError(
            f"labels {existing} exist already in {root.store}; use overwrite (--overwrite) "
            "to replace them, or another name"
        )
    job.remove()
    for n in names.values():
        ome_labels.remove_label(root, n)
    return False


def _run(client, model, spec, todo, n_done, total, progress, cancel) -> list[dict]:
    """Run the blocks ``todo`` here or on the cluster, reporting progress in blocks."""
    net = model if not model.training else _eval_copy(model)
    if progress is not None:
        progress(n_done, total)
    reports = []
    if client is None:
        for i in todo:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {n_done} of {total} blocks; rerun to resume")
            reports.append(run_block(spec, net, i))
            n_done += 1
            if progress is not None:
                progress(n_done, total)
        return reports
    from distributed import as_completed

    # One copy of the model per worker, shared by all its blocks.
    remote = client.scatter(net.cpu(), broadcast=True)
    futures = [client.submit(run_block, spec, remote, i, pure=False) for i in todo]
    try:
        for f in as_completed(futures):
            reports.append(f.result())
            n_done += 1
            if progress is not None:
                progress(n_done, total)
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {n_done} of {total} blocks; rerun to resume")
    finally:
        client.cancel(futures)
    return reports


def _eval_copy(model: SegNet) -> SegNet:
    import copy

    return copy.deepcopy(model).eval()


def _relabel(client, spec: BlockSpec, total: int, job: JobState, out: str) -> int:
    """Give every object its image-wide id (the rank of its anchor); the object count."""
    keys = [job.load(i)["keys"] for i in range(total)]
    ranks = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    if client is None:
        for i in range(total):
            relabel_block(spec, i, ranks, out)
    else:
        remote = client.scatter(ranks, broadcast=True)
        client.gather([client.submit(relabel_block, spec, i, remote, out) for i in range(total)])
    return len(ranks)
