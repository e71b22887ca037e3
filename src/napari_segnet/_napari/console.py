"""Console helpers that work on napari layers (``ns.napari.segment_layer``)."""

from __future__ import annotations

from ..segment import SegmentResult, segment
from .layers import layer_axes, layer_data, put_layer


def segment_layer(viewer, layer, model, **kwargs) -> SegmentResult:
    """Segment a layer and add the results as layers, like the Segment widget.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (``viewer`` in napari's console).
    layer : napari.layers.Image or str
        The image layer or its name.
    model : SegNet or str
        A model, or a bundled model name / file path for :func:`load_model`.
    **kwargs
        Passed to :func:`napari_segnet.segment` (tile_size, diameter, crf, ...).

    Returns
    -------
    SegmentResult
        Also added to the viewer as ``"<layer> semantic"`` and ``"<layer> instances"``.
    """
    from ..io.bundled import load_model
    from ..models import SegNet

    if isinstance(layer, str):
        layer = viewer.layers[layer]
    if not isinstance(model, SegNet):
        model = load_model(model)
    kwargs.setdefault("axes", layer_axes(layer))
    data = layer_data(layer)
    res = segment(data, model, **kwargs)
    put_layer(viewer, f"{layer.name} semantic", res.semantic, "labels", like=layer)
    if res.instances is not None:
        put_layer(viewer, f"{layer.name} instances", res.instances, "labels", like=layer)
    return res
