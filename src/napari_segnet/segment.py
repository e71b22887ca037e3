"""``segment``: image → probabilities → classes → instances, as one pipeline.

Read top to bottom, an image passes each stage once: the input is checked and laid
out (``engine.axes``), rescaled to the model's object size (``engine.rescale``),
planned into tiles (``engine.plan``), run tile by tile into a sink (``engine``),
post-processed (``postprocess``: CRF, classes, instances), mapped back to the input's
grid and, when asked, written to a zarr store (``io.zarr_output``).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import checks
from .engine import physical
from .engine.axes import Layout, make_layout
from .engine.channels import match_channels
from .engine.plan import Plan, RunOptions, as_source, check_image, make_plan
from .engine.predict import run_plan
from .engine.rescale import MAX_ZOOM, Rescaled, rescale_factor
from .engine.runner import Progress
from .engine.sinks import ArraySink, semantic_dtype
from .engine.size import estimate_diameter
from .errors import SegNetError
from .io.zarr_output import COMPLETE_ATTR, ZarrOutput
from .models.base import SegNet
from .options import CRFOptions, InstanceOptions
from .postprocess import results
from .postprocess.crf import check_params
from .postprocess.instances import label_instances_blockwise
from .postprocess.tracking import link_over_time
from .provenance import provenance as make_provenance

# Automatic sizes within this ratio of the training diameter are not rescaled.
AUTO_TOLERANCE = 1.1

__all__ = ["COMPLETE_ATTR", "SegmentResult", "segment"]


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
    objects : dict or None
        Detection models (Mask R-CNN) only: per object, ``label``, ``score`` and box
        corners ``y0``, ``x0``, ``y1``, ``x1`` (arrays of equal length; napari shows
        them as the labels layer's features).
    provenance : dict
        What made this result (:mod:`napari_segnet.provenance`): the model with the
        SHA-256 of its weights, the parameters given and resolved, the version and
        the time.
    """

    probabilities: Any
    semantic: Any
    instances: Any = None
    axes: str = ""
    info: dict = field(default_factory=dict)
    objects: dict | None = None
    provenance: dict = field(default_factory=dict)


def segment(
    image,
    model: SegNet,
    axes: str | None = None,
    *,
    tile_size=None,
    batch_size: int | None = None,
    device="auto",
    diameter: float | str | None = "auto",
    spacing=None,
    physical_diameter: float | None = None,
    stitch_3d: bool | None = None,
    anisotropy: float | None = None,
    crf: bool | dict = False,
    instances: bool | None = None,
    instance_options: dict | None = None,
    output=None,
    precision: str = "auto",
    border: int | None = None,
    detection: dict | None = None,
    link_time: bool | dict = False,
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
    diameter : float, "auto" or None
        Typical object diameter in pixels in this image; the image is rescaled so
        objects match the size the model was trained on, and results are resized
        back (probabilities linearly, labels by nearest neighbour). ``"auto"`` (the
        default) estimates it with :func:`estimate_diameter` when the model records
        a training diameter, and rescales when the estimate differs from it by more
        than 10 %; for models without one it means None. None: no rescaling.
        ``info["diameter"]`` holds the diameter used, ``info["diameter_estimated"]``
        whether it was estimated.
    spacing : float or sequence of float, optional
        Physical pixel size (e.g. µm) along each Z, Y and X axis of the image, in the
        order of ``axes`` (one number: the same for all). With it, a model that
        records the pixel size it was trained at (``model.meta["pixel_size"]``) is
        matched when ``diameter`` is ``"auto"`` (no estimate is needed); in-plane
        anisotropy is removed; a 3D model's Z axis is zoomed to the Z to XY ratio the
        model was trained at (cubic voxels when it records none); and a 2D model's
        slices are stitched with Z spacing over XY spacing as ``anisotropy``. Results
        always come back on the input's grid. ``info["spacing"]`` and
        ``info["zoom"]`` (per axis) say what was done.
    physical_diameter : float, optional
        Typical object diameter in the units of ``spacing`` (which it needs), e.g.
        ``physical_diameter=10`` with ``spacing=0.65`` for 10 µm nuclei in 0.65 µm
        pixels. Stands for ``diameter`` (pixels), which must then be left at "auto".
    stitch_3d : bool, optional
        With a 2D model and a ``Z`` axis: label 3D objects over the stacked slice
        probabilities (see :func:`~napari_segnet.postprocess.stitch.stitch_slices`)
        instead of each slice on its own. None: when the model is 2D, the axes hold
        ``Z`` and the model was trained on instances. ``T`` stays frame by frame.
        Stitching needs the probabilities in memory.
    anisotropy : float, optional
        Z spacing over XY spacing, for stitching (seeds are found with distances
        measured in these units); None: from ``spacing``, else 1. Give ``spacing``
        or ``anisotropy``, not both.
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
    detection : dict, optional
        Mask R-CNN models only: ``score_threshold``, ``nms_threshold`` and ``overlap``
        for :func:`~napari_segnet.engine.detect.detect`. With such a model the image
        must be one 2D plane; ``tile_size`` is the tile core, the other options above
        do not apply, ``probabilities`` holds background and the painted mask
        probability, ``instances`` the objects (a pixel claimed by two goes to the
        higher score) and ``objects`` their scores and boxes.
    link_time : bool or dict
        With a ``T`` axis: give each object one id across frames by overlap with the
        previous frame (:func:`~napari_segnet.postprocess.tracking.link_over_time`;
        a dict passes its ``min_iou``). No division tracking, no gap closing.
    progress : callable, optional
        ``progress(done, total)`` in tiles.
    cancel : threading.Event, optional
        Set it to stop with :class:`~napari_segnet.errors.Cancelled`.

    Returns
    -------
    SegmentResult

    Warns
    -----
    SegNetWarning
        When the image's channels were converted for the model: an RGB(A) image for
        a grey model becomes its luminance (0.2125 R + 0.7154 G + 0.0721 B), a grey
        image for a 3-channel model is repeated to 3 channels. ``info["notes"]``
        says what was done.

    Raises
    ------
    SegNetError
        For a bad image or parameter, before any work (see "Errors and limits" in
        the documentation); :class:`~napari_segnet.NotAModelError` for a model that
        is not one.
    """
    # 0. Every argument checked before any work.
    src = as_source(image)
    checks.model(model)
    if model.arch == "maskrcnn":
        scale = {"diameter": diameter, "spacing": spacing, "physical_diameter": physical_diameter}
        if crf is not False and crf is not None:
            raise SegNetError(
                "crf= refines the pixel classes of a UNet-type model; a Mask R-CNN model "
                "has a mask per object instead, so it cannot be refined this way"
            )
        if link_time:
            raise SegNetError(
                "link_time needs a T axis; Mask R-CNN models segment one 2D image at a time"
            )
        return _segment_detections(
            src, model, axes, tile_size, device, detection, output, progress, cancel, scale
        )
    RunOptions.check(model, tile_size, batch_size, device, precision, border)
    _check_diameter(model, diameter)
    stitch_3d = checks.flag("stitch_3d", stitch_3d, optional=True)
    if anisotropy is not None:
        anisotropy = checks.number("anisotropy", anisotropy, low=0, low_open=True)
    if not isinstance(crf, (bool, np.bool_)):
        check_params(crf, model.n_classes)
    instances = checks.flag("instances", instances, optional=True)
    if isinstance(instance_options, InstanceOptions):
        instance_options = instance_options.changed()
    if instance_options is not None and not isinstance(instance_options, dict):
        raise SegNetError(f"instance_options must be a dict or None, not {instance_options!r}")
    link = _check_link(link_time)
    checks.callback("progress", progress)
    checks.cancel_event(cancel)
    check_image(src)
    # 1. The input: channels, layout, and the zoom that gives objects the trained size.
    src, axes, note = match_channels(src, axes, model.in_channels)
    layout = make_layout(tuple(src.shape), axes, model.dims, model.in_channels)
    if instances is None:
        instances = model.metadata.target == "instances"
    options = results.instance_options(model, instance_options)
    if link is not None and "T" not in layout.out_axes:
        raise SegNetError(f"link_time needs a T axis, but the axes are {layout.axes!r}")
    spacing = physical.check_spacing(spacing, layout.axes)
    physical.check_physical_diameter(physical_diameter, spacing, diameter)
    z_ratio = physical.stitch_anisotropy(spacing, anisotropy)
    params = {
        "axes": layout.axes,
        "tile_size": tile_size,
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
        "border": border,
        "diameter": diameter,
        "stitch_3d": stitch_3d,
        "anisotropy": anisotropy,
        "spacing": spacing,
        "physical_diameter": physical_diameter,
        # Every setting in full: the defaults with what was changed over them.
        "crf": {**CRFOptions().to_dict(), **results.crf_params(model, crf)} if crf else False,
        "instances": instances,
        "instance_options": {**asdict(InstanceOptions()), **options},
        "normalization": model.meta.get("normalization"),
        "link_time": link,
    }
    zoom, used, estimated = _zoom(src, model, layout, diameter, spacing, physical_diameter, device)
    work = Rescaled.zoomed(src, layout, zoom.factors, zoom.plane)
    stitch = _stitch(model, layout, stitch_3d, instances, z_ratio * work.factor)
    # 2. The plan: normalisation, tiles, batches.
    plan = make_plan(
        work.image, model, layout.axes, tile_size, batch_size, device, precision, border
    )
    run = {"precision": precision, "progress": progress, "cancel": cancel}
    info = {
        "diameter": used,
        "diameter_estimated": estimated,
        "rescale": work.factor,
        "stitch_3d": stitch is not None,
        **_physical_info(layout, spacing, zoom, used),
        "notes": [note] if note else [],
    }
    if output is not None and work.image is src and not crf and stitch is None:
        # 3a. Tiles straight into the store; instances block by block from there.
        with ZarrOutput(output) as store:
            res = _segment_into_store(work, model, plan, store, instances, options, run)
            res.info.update(info)
            if link is not None and res.instances is not None:
                res.instances[...] = _link(np.asarray(res.instances), res.axes, link)
            res.provenance = _provenance(model, src, params, res.info)
            return res
    # 3b. Tiles into memory, then post-processing and the way back to the input grid.
    prob = np.zeros((model.n_classes, *plan.layout.out_shape), np.float32)
    run_plan(work.image, model, plan, ArraySink(plan.layout, probabilities=prob), **run)
    prob, semantic, labels = results.finish(
        prob,
        model,
        image=work.image,
        layout=plan.layout,
        crf=crf,
        instances=instances,
        options=options,
        stitch=stitch,
        semantic_dtype=semantic_dtype(model.n_classes),
        device=device,
        cancel=cancel,
    )
    prob = work.restore_probabilities(prob)
    semantic, labels = work.restore_labels(semantic), work.restore_labels(labels)
    if link is not None and labels is not None:
        labels = _link(labels, layout.out_axes, link)
    if output is not None:
        # Rescaled or refined results exist only in memory; written whole.
        with ZarrOutput(output) as store:
            arrays = {"probabilities": prob, "semantic": semantic, "instances": labels}
            store.write_whole(arrays, plan.core)
            store.complete()
    info = {**_info(plan, model), **info}
    res = SegmentResult(prob, semantic, labels, layout.out_axes, info)
    res.provenance = _provenance(model, src, params, info)
    return res


def _segment_detections(
    src, model: SegNet, axes, tile_size, device, detection, output, progress, cancel, scale
) -> SegmentResult:
    """``segment`` for a detection model: tiled Mask R-CNN, then the same result fields.

    A diameter in pixels (or a physical one with a spacing) zooms the image so objects
    have the size the model was trained on; ``"auto"`` estimates it by detecting in a
    central crop, as for the other models, and zooms when it is far from the
    training diameter.
    """
    from .engine.detect import detect  # the detector's modules load only when used

    if detection is not None and not isinstance(detection, dict):
        raise SegNetError(f"detection must be a dict or None, not {detection!r}")
    allowed = {"score_threshold", "nms_threshold", "overlap"}
    unknown = set(detection or {}) - allowed
    if unknown:
        raise SegNetError(f"unknown detection option(s) {sorted(unknown)}; use {sorted(allowed)}")
    if tile_size is not None and not isinstance(tile_size, (int, np.integer)):
        raise SegNetError(f"tile_size for a Mask R-CNN model is one integer, not {tile_size!r}")
    check_image(src)
    src, axes, note = match_channels(src, axes, model.in_channels)
    layout = make_layout(tuple(src.shape), axes, 2, model.in_channels)
    if layout.outer:
        raise SegNetError(
            f"Mask R-CNN detects in 2D images; the axes {layout.axes!r} hold a stack or a "
            "volume: pass one plane at a time (e.g. image[z])"
        )
    diameter = scale["diameter"]
    _check_diameter(model, diameter)
    spacing = physical.check_spacing(scale["spacing"], layout.axes)
    physical.check_physical_diameter(scale["physical_diameter"], spacing, diameter)
    zoom, used, estimated = _zoom(
        src, model, layout, diameter, spacing, scale["physical_diameter"], device
    )
    work = Rescaled.zoomed(src, layout, zoom.factors, zoom.plane)
    found = detect(
        np.asarray(work.image),
        model,
        layout.axes,
        tile_size=tile_size,
        device=device,
        progress=progress,
        cancel=cancel,
        **(detection or {}),
    )
    labels = work.restore_labels(found.labels)
    foreground = work.restore_probabilities(found.foreground[None])[0]
    factors = work.factors or (work.factor, work.factor)
    found.boxes /= np.array([factors[0], factors[1], factors[0], factors[1]], np.float32)
    prob = np.stack([1.0 - foreground, foreground]).astype(np.float32)
    semantic = (labels > 0).astype(np.uint8)
    info = {
        **found.info,
        "model": model.source or model.arch,
        "notes": [note] if note else [],
        "diameter": used,
        "diameter_estimated": estimated,
        "rescale": work.factor,
        **_physical_info(layout, spacing, zoom, used),
    }
    if output is not None:
        with ZarrOutput(output) as store:
            arrays = {"probabilities": prob, "semantic": semantic, "instances": labels}
            store.write_whole(arrays, tuple(min(n, 512) for n in labels.shape))
            store.complete()
    features = found.features()
    # An object smaller than a pixel after zooming back has no pixels left.
    kept = np.isin(features["label"], np.unique(labels))
    features = {k: v[kept] for k, v in features.items()}
    res = SegmentResult(prob, semantic, labels, "YX", info, features)
    params = {
        "axes": layout.axes,
        "tile_size": tile_size,
        "device": device,
        "detection": detection,
        **scale,
    }
    res.provenance = _provenance(model, src, params, info)
    return res


def _check_link(link_time) -> dict | None:
    """``link_time`` as ``link_over_time``'s keyword arguments, or None for no linking."""
    if isinstance(link_time, (bool, np.bool_)):
        return {"min_iou": 0.1} if link_time else None
    if not isinstance(link_time, dict) or set(link_time) - {"min_iou"}:
        raise SegNetError(f"link_time must be True, False or {{'min_iou': x}}, not {link_time!r}")
    iou = checks.number("min_iou", link_time.get("min_iou", 0.1), low=0, high=1, low_open=True)
    return {"min_iou": iou}


def _link(labels, axes: str, link: dict) -> np.ndarray:
    return link_over_time(labels, axis=axes.index("T"), **link)


def _provenance(model: SegNet, src, params: dict, info: dict) -> dict:
    """The provenance record of a run: parameters as given and as resolved (``info``)."""
    return make_provenance(
        model,
        params,
        resolved={k: v for k, v in info.items() if k != "notes"},
        input={"shape": [int(n) for n in src.shape], "dtype": str(src.dtype)},
    )


def _check_diameter(model: SegNet, diameter) -> None:
    """``diameter`` must be "auto", None, or a number the model can rescale to."""
    if isinstance(diameter, str):
        if diameter != "auto":
            raise SegNetError(f"diameter must be a number, 'auto' or None, not {diameter!r}")
        return
    rescale_factor(model, diameter)


def _diameter(src, model: SegNet, axes: str, diameter, device) -> tuple[float | None, bool]:
    """The diameter to rescale to, and whether it was estimated.

    An estimate is kept within the zoom range that a given diameter may ask for.
    """
    if isinstance(diameter, str):
        trained = model.metadata.diameter
        if not trained:
            return None, False
        estimate = estimate_diameter(src, model, axes, device=device)
        if estimate is not None:
            lo, hi = float(trained) / MAX_ZOOM, float(trained) * MAX_ZOOM
            estimate = min(max(float(estimate), lo), hi)
        return estimate, True
    return None if diameter is None else float(diameter), False


def _rescales(model: SegNet, diameter: float | None, estimated: bool) -> bool:
    """Whether to rescale: always for a given diameter, for an estimate when far off."""
    if diameter is None or not estimated:
        return diameter is not None
    ratio = float(model.metadata.diameter) / diameter
    return not 1 / AUTO_TOLERANCE <= ratio <= AUTO_TOLERANCE


def _zoom(
    src, model: SegNet, layout: Layout, diameter, spacing, physical_diameter, device
) -> tuple[physical.Zoom, float | None, bool]:
    """The zoom per spatial axis, the diameter (pixels) it amounts to, and whether it
    was estimated: from a diameter in pixels or in physical units, the model's pixel
    size, or an estimate."""
    if physical_diameter is not None:
        diameter = float(physical_diameter) / physical.plane_spacing(spacing)
        try:
            _check_diameter(model, diameter)
        except SegNetError as e:
            raise SegNetError(
                f"physical_diameter={physical_diameter:g} is {diameter:.3g} px at this spacing: {e}"
            ) from None
    if diameter is None:
        return physical.Zoom(tuple(1.0 for _ in layout.spatial), 1.0, "none"), None, False
    trained = model.metadata.diameter
    if spacing is not None and diameter == "auto" and physical.model_pixel_size(model):
        # The model's pixel size decides; nothing to estimate.
        zoom = physical.zoom_for(model, layout, spacing, None)
        return zoom, (float(trained) / zoom.plane if trained else None), False
    used, estimated = _diameter(src, model, layout.axes, diameter, device)
    plane_zoom = rescale_factor(model, used) if _rescales(model, used, estimated) else None
    return physical.zoom_for(model, layout, spacing, plane_zoom), used, estimated


def _physical_info(layout: Layout, spacing, zoom: physical.Zoom, used: float | None) -> dict:
    """``info`` entries on physical scale (none without a spacing)."""
    if spacing is None:
        return {}
    plane = physical.plane_spacing(spacing)
    return {
        "spacing": spacing,
        "zoom": {layout.axes[i]: f for i, f in zip(layout.spatial, zoom.factors)},
        "zoom_reason": zoom.reason,
        "physical_diameter": None if used is None else used * plane,
    }


def _stitch(
    model: SegNet, layout: Layout, stitch_3d: bool | None, instances: bool, anisotropy: float
) -> dict | None:
    """``finish``'s stitching arguments, or None to label slice by slice."""
    slices = model.dims == 2 and "Z" in layout.axes
    if stitch_3d is None:
        stitch_3d = slices and instances and model.metadata.target == "instances"
    if not stitch_3d or not instances:
        return None
    if not slices:
        raise SegNetError("stitch_3d=True needs a 2D model and an image with a Z axis")
    return {"axes": layout.out_axes, "anisotropy": float(anisotropy)}


def _segment_into_store(
    work: Rescaled, model: SegNet, plan: Plan, store: ZarrOutput, instances: bool, options, run
) -> SegmentResult:
    """Probabilities and classes written tile by tile, instances labelled blockwise."""
    out_shape = plan.layout.out_shape
    prob = store.create("probabilities", (model.n_classes, *out_shape), np.float32, plan.core)
    sem = store.create("semantic", out_shape, semantic_dtype(model.n_classes), plan.core)
    labels = store.create("instances", out_shape, np.int32, plan.core) if instances else None
    run_plan(work.image, model, plan, ArraySink(plan.layout, prob, sem), **run)
    if labels is not None:
        label_instances_blockwise(prob, out=labels, cancel=run["cancel"], **options)
    store.complete()
    return SegmentResult(prob, sem, labels, work.layout.out_axes, _info(plan, model))


def _info(plan: Plan, model: SegNet) -> dict:
    return {
        "tile_core": plan.core,
        "halo": model.halo,
        "batch_size": plan.batch_size,
        "device": str(plan.device),
        "n_tiles": len(plan.tiles),
        "model": model.source or model.arch,
    }
