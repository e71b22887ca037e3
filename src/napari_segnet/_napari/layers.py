"""Layer <-> array helpers shared by the panels: axes, placement, the slice on screen."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SegNetError


def as_array(data) -> np.ndarray:
    """Layer data as a numpy array (multiscale: the full-resolution level)."""
    if isinstance(data, (list, tuple)):  # multiscale
        data = data[0]
    return data


def layer_data(layer):
    """A layer's data; for a multiscale layer its full-resolution level."""
    return layer.data[0] if getattr(layer, "multiscale", False) else as_array(layer.data)


def layer_axes(layer, rgb: bool | None = None) -> str:
    """Axes string for a layer's data: the last two are YX, RGB adds C, others are Z/T."""
    nd = layer.data.ndim
    is_rgb = getattr(layer, "rgb", False) if rgb is None else rgb
    spatial = nd - (1 if is_rgb else 0)
    lead = {2: "", 3: "Z", 4: "TZ", 5: "TZC"}.get(spatial)
    if lead is None:
        raise SegNetError(
            f"cannot handle a layer with {nd} dimensions: use a 2D to 5D image (optionally RGB)"
        )
    labels = [str(a).upper() for a in getattr(layer, "axis_labels", ())][-spatial:]
    if len(labels) == spatial and all(a in "TZYXC" for a in labels) and len(set(labels)) == spatial:
        axes = "".join(labels)
        if "Y" in axes and "X" in axes:
            return axes + ("C" if is_rgb else "")
    return lead + "YX" + ("C" if is_rgb else "")


def layer_kwargs(layer, drop_leading: int = 0) -> dict[str, Any]:
    """Scale, translate and axis labels to copy from ``layer`` (without RGB's channel)."""
    nd = layer.ndim
    out = {
        "scale": tuple(layer.scale)[drop_leading:nd],
        "translate": tuple(layer.translate)[drop_leading:nd],
    }
    labels = getattr(layer, "axis_labels", None)
    if labels is not None:
        out["axis_labels"] = tuple(labels)[drop_leading:nd]
    return out


def _plane_shape(layer) -> tuple[int, ...]:
    """Shape of a layer's data without RGB's channel axis."""
    shape = tuple(np.shape(layer_data(layer)))
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def current_index(viewer, layer, keep: int = 2) -> tuple[int, ...]:
    """Index of the slice on screen in ``layer``'s leading axes.

    The leading axes are all but the last ``keep`` (non-channel) axes of the data;
    ``()`` when there are none. The layer's axes are taken to be the viewer's last
    ones, and the viewer's current step to be a data index on them (clipped to the
    data). Every panel asks here, so the mapping from the viewer to the data is
    made in this one place.
    """
    shape = _plane_shape(layer)
    n_lead = len(shape) - keep
    if n_lead <= 0:
        return ()
    step = viewer.dims.current_step
    offset = viewer.dims.ndim - layer.ndim
    return tuple(int(np.clip(step[offset + i], 0, shape[i] - 1)) for i in range(n_lead))


def embed_plane(plane, layer, index: tuple[int, ...], dtype=None) -> np.ndarray:
    """``plane``, the result for the slice ``index``, in a zero array of the layer's size.

    The array has the shape of the layer's data (without RGB's channel) and the
    plane's dtype, or ``dtype``. With an empty index the plane is the whole layer and
    comes back as it is.
    """
    plane = np.asarray(plane)
    if not index:
        return plane
    full = np.zeros(_plane_shape(layer), plane.dtype if dtype is None else dtype)
    full[index] = plane
    return full


def put_layer(viewer, name: str, data, kind: str, like=None, **kwargs):
    """Update the layer called ``name`` or add it: re-runs replace, they do not pile up."""
    if like is not None:
        kwargs = {**layer_kwargs(like), **kwargs}
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    if name in viewer.layers and isinstance(viewer.layers[name], cls):
        layer = viewer.layers[name]
        layer.data = data
        for k in ("scale", "translate"):
            if k in kwargs and len(kwargs[k]) == layer.ndim:
                setattr(layer, k, kwargs[k])
        return layer
    if name in viewer.layers:
        viewer.layers.remove(name)
    add = {"image": viewer.add_image, "labels": viewer.add_labels}[kind]
    try:
        return add(data, name=name, **kwargs)
    except (TypeError, ValueError):
        kwargs.pop("axis_labels", None)
        return add(data, name=name, **kwargs)
