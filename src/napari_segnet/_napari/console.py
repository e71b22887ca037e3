"""Console helpers that work on napari layers (``ns.napari.segment_layer``)."""

from __future__ import annotations

from ..segment import SegmentResult, segment
from ._common import SESSION_MODELS
from .layers import layer_axes, layer_data
from .measurements import features_of, intensity_image, measure_arrays
from .results import ResultWriter
from .scale import layer_spacing


def segment_layer(viewer, layer, model, **kwargs) -> SegmentResult:
    """Segment a layer and add the results as layers, named as the Segment panel names them.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (``viewer`` in napari's console).
    layer : napari.layers.Image or str
        The image layer or its name.
    model : SegNet or str
        A model; the name of a model trained in the Train panel this session; or a
        bundled model name / file path for :func:`load_model`.
    **kwargs
        Passed to :func:`napari_segnet.segment` (axes, tile_size, diameter, crf, ...);
        ``spacing`` defaults to the layer's scale when it has one (see
        :func:`~napari_segnet._napari.scale.layer_spacing`).

    Returns
    -------
    SegmentResult
        Also added to the viewer as ``"<layer> · <model> · semantic"`` and
        ``"<layer> · <model> · instances"`` (``<model>`` is the model's own name), with
        the measurements as the instance layer's features and the run's provenance in
        each layer's metadata, as the Segment panel makes them.
    """
    from ..io.bundled import load_model
    from ..models import SegNet

    if isinstance(layer, str):
        layer = viewer.layers[layer]
    if isinstance(model, str) and model in SESSION_MODELS:
        # A model trained in the Train panel this session, by the name the panels show.
        given, model = model, SESSION_MODELS[model]
        model.meta.setdefault("name", given)
    elif not isinstance(model, SegNet):
        given = str(model)
        model = load_model(model)
        model.meta.setdefault("name", given)
    kwargs.setdefault("axes", layer_axes(layer))
    if "spacing" not in kwargs and kwargs.get("anisotropy") is None:
        kwargs["spacing"] = layer_spacing(layer, kwargs["axes"], kwargs["axes"])
    res = segment(layer_data(layer), model, **kwargs)
    name = str(model.meta.get("name") or "model")
    writer = ResultWriter(viewer, layer, name, kwargs["axes"], {}, model.metadata)
    writer.provenance = res.provenance
    writer.put("semantic", res.semantic)
    if res.instances is not None:
        table = measure_arrays(
            res.instances,
            intensity_image(layer, kwargs["axes"]),
            res.axes,
            writer.kwargs["scale"],
            getattr(layer, "units", None),
        )
        writer.put("instances", res.instances, None if table is None else features_of(table))
    return res
