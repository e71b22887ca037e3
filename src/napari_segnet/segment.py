"""Image → probabilities → semantic classes → instances, in memory or into a zarr store."""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from skimage.transform import resize

from .engine.axes import make_layout
from .engine.tiling import Progress, _as_source, make_plan, run_plan, semantic_dtype
from .errors import SegNetError
from .models.base import SegNet
from .postprocess.instances import label_instances, label_instances_blockwise

COMPLETE_ATTR = "napari_segnet_complete"


@dataclass
class SegmentResult:
    """What :func:`segment` returns.

    Attributes
    ----------
    probabilities : array
        float32 ``(n_classes, *shape)`` (numpy, or zarr when ``output`` was given).
    semantic : array
        Class ids ``(*shape)``, the smallest unsigned dtype that fits.
    instances : array or None
        int32 instance ids ``(*shape)``, 0 = background.
    axes : str
        Axes of ``semantic`` and ``instances`` (the input's, without ``C``).
    info : dict
        Tile size, batch size, device and model used.
    """

    probabilities: Any
    semantic: Any
    instances: Any = None
    axes: str = ""
    info: dict = field(default_factory=dict)


def _rescale_factor(model: SegNet, diameter: float | None) -> float:
    if diameter is None:
        return 1.0
    if diameter <= 0:
        raise SegNetError("diameter must be positive (typical object diameter in pixels)")
    trained = model.meta.get("diameter")
    if not trained:
        raise SegNetError(
            "this model records no training object diameter, so diameter= cannot rescale; "
            "leave diameter=None"
        )
    return float(trained) / float(diameter)


def _zoom(arr: np.ndarray, layout, shape_out, order: int) -> np.ndarray:
    """Resize the spatial axes of an array laid out like ``layout`` (any other axes kept)."""
    target = list(arr.shape)
    for ax, s in zip(layout.spatial, shape_out):
        target[ax] = s
    return resize(
        arr,
        target,
        order=order,
        preserve_range=True,
        anti_aliasing=order > 0 and any(t < s for t, s in zip(target, arr.shape)),
        mode="reflect",
    ).astype(arr.dtype if order == 0 else np.float32, copy=False)


def _open_output(output, shapes: dict[str, tuple], dtypes: dict[str, np.dtype], chunks):
    import zarr

    created = None
    if isinstance(output, (str, os.PathLike)):
        p = Path(output)
        if p.exists():
            raise SegNetError(f"output {p} exists already; choose a new path")
        group = zarr.open_group(str(p), mode="w")
        created = p
    elif isinstance(output, zarr.Group):
        group = output
    else:
        raise SegNetError("output must be a path or a zarr group")
    arrays = {}
    for name, shape in shapes.items():
        ch = tuple(min(c, s) for c, s in zip(((1,) * (len(shape) - len(chunks))) + chunks, shape))
        arrays[name] = (
            group.create_array(name, shape=shape, dtype=dtypes[name], chunks=ch, overwrite=True)
            if hasattr(group, "create_array")
            else group.create_dataset(
                name, shape=shape, dtype=dtypes[name], chunks=ch, overwrite=True
            )
        )
    group.attrs[COMPLETE_ATTR] = False
    return group, arrays, created


def segment(
    image,
    model: SegNet,
    axes: str | None = None,
    *,
    tile_size=None,
    batch_size: int | None = None,
    device="auto",
    diameter: float | None = None,
    crf: bool | dict = False,
    instances: bool | None = None,
    instance_options: dict | None = None,
    output=None,
    precision: str = "auto",
    border: int | None = None,
    progress: Progress = None,
    cancel: threading.Event | None = None,
) -> SegmentResult:
    """Segment an image: probabilities, class per pixel, and instance ids.

    Parameters
    ----------
    image : array-like
        numpy, dask or zarr; 2D to 5D. Never modified.
    model : SegNet
        A model from :func:`build_model`, :func:`load_model` or :func:`train`.
    axes : str, optional
        e.g. ``"YX"``, ``"ZYX"``, ``"TYX"``, ``"YXC"``; guessed if None.
    tile_size, batch_size, device, precision, border
        As in :func:`napari_segnet.predict`.
    diameter : float, optional
        Typical object diameter in pixels in this image; the image is rescaled so
        objects match the size the model was trained on, and results are resized
        back (probabilities linearly, labels by nearest neighbour).
    crf : bool or dict
        Refine the probabilities with :func:`refine_crf` before labelling (a dict
        passes its parameters). For instance models (background, interior, boundary)
        objects are refined against the background as one class, so the boundary
        class that separates touching objects is kept (``crf={"foreground": None}``
        refines the three classes as they are). Needs the image in memory;
        with ``output`` the refined results are written whole at the end.
    instances : bool, optional
        Compute instance labels; None: when the model was trained on instances.
    instance_options : dict, optional
        Keyword arguments for :func:`label_instances`; they override the model's own
        (``model.meta["instance_options"]``, e.g. a tuned seed threshold).
    output : str, path or zarr group, optional
        Write ``probabilities``, ``semantic`` (and ``instances``) arrays there tile
        by tile instead of holding them in memory. The group's attribute
        ``napari_segnet_complete`` turns True only when everything was written; a
        store created here is removed again if the job is cancelled or fails.
    progress : callable, optional
        ``progress(done, total)`` in tiles.
    cancel : threading.Event, optional
        Set it to stop with :class:`~napari_segnet.errors.Cancelled`.

    Returns
    -------
    SegmentResult
    """
    src = _as_source(image)
    if not isinstance(model, SegNet):
        raise SegNetError("model must be a napari-segnet model (build_model, load_model or train)")
    layout = make_layout(tuple(src.shape), axes, model.dims, model.in_channels)
    if instances is None:
        instances = model.meta.get("target") == "instances"
    factor = _rescale_factor(model, diameter)
    work = src
    if factor != 1.0:
        arr = np.asarray(src)
        shape_small = [max(1, round(s * factor)) for s in layout.spatial_shape]
        work = _zoom(arr.astype(np.float32), layout, shape_small, order=1)
    plan = make_plan(work, model, layout.axes, tile_size, batch_size, device, precision, border)
    out_shape = plan.layout.out_shape
    sem_dtype = semantic_dtype(model.n_classes)
    store = created = None
    try:
        if output is not None and factor == 1.0 and not crf:
            shapes = {"probabilities": (model.n_classes, *out_shape), "semantic": out_shape}
            dtypes = {"probabilities": np.dtype(np.float32), "semantic": sem_dtype}
            if instances:
                shapes["instances"] = out_shape
                dtypes["instances"] = np.dtype(np.int32)
            store, arrays, created = _open_output(output, shapes, dtypes, plan.core)
            prob, sem = arrays["probabilities"], arrays["semantic"]
        else:
            prob = np.zeros((model.n_classes, *out_shape), np.float32)
            sem = None
        run_plan(
            work,
            model,
            plan,
            probabilities=prob,
            semantic=sem,
            precision=precision,
            progress=progress,
            cancel=cancel,
        )
        opts = {
            "ndim": model.dims,
            **(model.meta.get("instance_options") or {}),
            **(instance_options or {}),
        }
        if store is not None:
            # Probabilities and classes are on disk already; instances are labelled
            # block by block from there, so memory stays bounded.
            if instances:
                label_instances_blockwise(prob, out=arrays["instances"], cancel=cancel, **opts)
            store.attrs[COMPLETE_ATTR] = True
            return SegmentResult(
                arrays["probabilities"],
                arrays["semantic"],
                arrays.get("instances"),
                layout.out_axes,
                _info(plan, model),
            )
        prob_np = prob
        if crf:
            from .crf import refine_crf

            params = crf if isinstance(crf, dict) else {}
            if model.meta.get("target") == "instances" and model.n_classes == 3:
                # Objects against background: the thin boundary class survives.
                params = {"foreground": (1, 2), **params}
            prob_np = refine_crf(
                _crf_image(work, plan.layout), prob_np, device=device, cancel=cancel, **params
            )
        semantic_np = prob_np.argmax(0).astype(sem_dtype)
        inst = label_instances(prob_np, **opts) if instances else None
        if factor != 1.0:
            full = (model.n_classes, *layout.out_shape)
            prob_np = resize(prob_np, full, order=1, preserve_range=True).astype(np.float32)
            semantic_np = resize(
                semantic_np, layout.out_shape, order=0, preserve_range=True, anti_aliasing=False
            ).astype(sem_dtype)
            if inst is not None:
                inst = resize(
                    inst, layout.out_shape, order=0, preserve_range=True, anti_aliasing=False
                ).astype(np.int32)
        if output is not None:
            # Rescaled or refined results exist only in memory; write them whole.
            shapes = {"probabilities": prob_np.shape, "semantic": semantic_np.shape}
            dtypes = {"probabilities": np.dtype(np.float32), "semantic": sem_dtype}
            if inst is not None:
                shapes["instances"], dtypes["instances"] = inst.shape, np.dtype(np.int32)
            store, arrays, created = _open_output(output, shapes, dtypes, plan.core)
            arrays["probabilities"][...] = prob_np
            arrays["semantic"][...] = semantic_np
            if inst is not None:
                arrays["instances"][...] = inst
            store.attrs[COMPLETE_ATTR] = True
        return SegmentResult(prob_np, semantic_np, inst, layout.out_axes, _info(plan, model))
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _crf_image(src, layout) -> np.ndarray:
    """The image with axes like the outputs and any channel axis last, for the CRF."""
    img = np.asarray(src)
    if layout.channel is not None:
        img = np.moveaxis(img, layout.channel, -1)
    if img.ndim - (layout.channel is not None) > 3:
        raise SegNetError("crf=True takes 2D images, stacks or volumes (at most 3 axes)")
    return img


def _info(plan, model: SegNet) -> dict:
    return {
        "tile_core": plan.core,
        "halo": model.halo,
        "batch_size": plan.batch_size,
        "device": str(plan.device),
        "n_tiles": len(plan.tiles),
        "model": getattr(model, "source", model.arch),
    }
