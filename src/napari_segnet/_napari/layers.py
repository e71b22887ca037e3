"""Layer <-> array helpers shared by the panels: axes, the slice on screen, result layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SegNetError

# Metadata key that marks the layers the panels made (and what they hold).
META_KEY = "napari_segnet"
SEP = " · "  # result layers are "<image> · <model> · <output>"
# Display settings a re-run applies to its existing layer (visibility stays the user's).
UPDATED = ("contrast_limits", "colormap", "opacity", "blending")


def as_array(data) -> np.ndarray:
    """Layer data as a numpy array (multiscale: the full-resolution level)."""
    if isinstance(data, (list, tuple)):  # multiscale
        data = data[0]
    return data


def layer_data(layer):
    """A layer's data; for a multiscale layer its full-resolution level."""
    return layer.data[0] if getattr(layer, "multiscale", False) else as_array(layer.data)


def layer_axes(layer, rgb: bool | None = None) -> str:
    """Axes string for a layer's data: the last two are YX, RGB adds C, others are Z/T.

    Axis labels made of T, Z, C, Y and X are taken as they are. Otherwise a first
    axis of at most 4 in a 3D or 4D (non-RGB) layer is taken as channels, not Z: a
    ``(2, 512, 512)`` layer is two channels of one image.
    """
    shape = tuple(np.shape(layer_data(layer)))
    nd = len(shape)
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
        if "Y" in axes and "X" in axes and not (is_rgb and "C" in axes):
            return axes + ("C" if is_rgb else "")
    if not is_rgb and spatial in (3, 4) and shape[0] <= 4:
        lead = "C" + lead[1:]
    return lead + "YX" + ("C" if is_rgb else "")


def check_axes(axes: str, layer) -> str:
    """``axes`` in capitals, checked against the layer's data, or a :class:`SegNetError`."""
    axes = axes.strip().upper()
    nd = len(np.shape(layer_data(layer)))
    ok = len(axes) == nd and set(axes) <= set("TZCYX") and len(set(axes)) == nd
    if not ok or not axes.endswith(("YX", "YXC")):
        raise SegNetError(
            f"axes {axes!r} do not fit the layer's {nd} dimensions: give one letter per "
            "dimension from T, Z, C, Y, X, each once, ending in YX (or YXC), e.g. "
            f"{layer_axes(layer)!r}"
        )
    return axes


def _kept_dims(layer, axes: str) -> list[int]:
    """The layer's dimensions that results have: all but a channel axis of a non-RGB layer."""
    nd = layer.ndim
    if getattr(layer, "rgb", False) or "C" not in axes:
        return list(range(nd))
    return [i for i in range(nd) if i != axes.index("C")]


def result_kwargs(layer, axes: str | None = None) -> dict[str, Any]:
    """Scale, translate, axis labels and units for results of ``layer`` (its channel axis
    dropped)."""
    keep = _kept_dims(layer, axes or "")
    out = {
        "scale": tuple(float(layer.scale[i]) for i in keep),
        "translate": tuple(float(layer.translate[i]) for i in keep),
    }
    labels = getattr(layer, "axis_labels", None)
    if labels is not None:
        out["axis_labels"] = tuple(labels[i] for i in keep)
    units = getattr(layer, "units", None)  # napari 0.5 and later
    if units is not None:
        out["units"] = tuple(units[i] for i in keep)
    return out


def layer_kwargs(layer) -> dict[str, Any]:
    """Scale, translate and axis labels to copy from ``layer`` (without RGB's channel)."""
    return result_kwargs(layer)


def slice_on_screen(viewer, layer, axes: str, letters: str) -> dict[int, int]:
    """Data indices of the slice on screen along ``layer``'s axes named in ``letters``.

    The viewer's world position (``viewer.dims.point``) is mapped through the layer's
    own transform (scale, translate, ...), so a layer with another Z spacing than
    the others gets its own slice; indices are clipped to the data. Keys are
    positions in ``axes`` (the layer's data axes).
    """
    shape = np.shape(layer_data(layer))
    data_pos = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    out = {}
    for i, a in enumerate(axes):
        if a in letters and i < layer.ndim:  # an RGB layer's ndim leaves out its colour
            out[i] = int(np.clip(np.round(data_pos[i]), 0, shape[i] - 1))
    return out


def current_index(viewer, layer, keep: int = 2) -> tuple[int, ...]:
    """Index of the slice on screen in ``layer``'s leading axes (all but the last ``keep``).

    ``()`` when there are none; see :func:`slice_on_screen` for the mapping.
    """
    axes = "".join("L" for _ in range(layer.ndim - keep)) + "S" * keep
    found = slice_on_screen(viewer, layer, axes, "L")
    return tuple(found[i] for i in sorted(found))


def out_shape(layer, axes: str) -> tuple[int, ...]:
    """Shape of results for ``layer`` read with ``axes``: its data without channels."""
    shape = tuple(np.shape(layer_data(layer)))
    return tuple(s for s, a in zip(shape, axes, strict=True) if a != "C")


def embed_plane(plane, layer, index: tuple[int, ...], dtype=None) -> np.ndarray:
    """``plane``, the result for the slice ``index``, in a zero array of the layer's size."""
    plane = np.asarray(plane)
    if not index:
        return plane
    shape = tuple(np.shape(layer_data(layer)))
    shape = shape[:-1] if getattr(layer, "rgb", False) else shape
    full = np.zeros(shape, plane.dtype if dtype is None else dtype)
    full[index] = plane
    return full


def result_name(image: str, model: str, output: str) -> str:
    """The name of a result layer: ``"<image> · <model> · <output>"``."""
    return SEP.join((image, model, output))


def results_of(viewer, source: str | None = None) -> list:
    """The layers the panels made (of the image called ``source``, or all)."""
    out = []
    for lay in viewer.layers:
        meta = lay.metadata.get(META_KEY)
        if meta is not None and (source is None or meta.get("source") == source):
            out.append(lay)
    return out


def put_layer(viewer, name: str, data, kind: str, like=None, **kwargs):
    """Update the layer called ``name`` or add it: re-runs replace, they do not pile up.

    ``like`` gives scale, translate and axis labels; ``metadata`` is merged into the
    layer's; display settings given here (contrast limits, colormap, ...) are
    applied on updates too, except ``visible``, which stays as the user left it.
    """
    if like is not None:
        kwargs = {**layer_kwargs(like), **kwargs}
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    if name in viewer.layers and isinstance(viewer.layers[name], cls):
        layer = viewer.layers[name]
        if np.shape(layer.data) == np.shape(data) or layer.ndim == np.ndim(data):
            layer.data = data
            for k, v in kwargs.items():
                if k == "metadata":
                    layer.metadata = {**layer.metadata, **v}
                elif k == "features":
                    layer.features = v
                elif k in UPDATED or (
                    k in ("scale", "translate", "units") and len(v) == layer.ndim
                ):
                    setattr(layer, k, v)
            return layer
    if name in viewer.layers:
        viewer.layers.remove(name)
    add = {"image": viewer.add_image, "labels": viewer.add_labels}[kind]
    try:
        return add(data, name=name, **kwargs)
    except (TypeError, ValueError):
        kwargs.pop("axis_labels", None)
        kwargs.pop("units", None)
        return add(data, name=name, **kwargs)
