"""Result layers of a run: ``"<image> · <model> · <output>"``, on the image's grid.

A run writes its own layers and nothing else. A run on the slice on screen writes
into that slice of the stack's result layers (made when missing) and keeps the
other slices. Probabilities become one image layer per class, hidden at first, so
no class axis takes over a slider.
"""

from __future__ import annotations

import numpy as np

from ..options import ModelMeta
from .layers import META_KEY, out_shape, put_layer, result_kwargs, result_name

# Colours of the probability layers, by class (background first).
CLASS_COLORMAPS = ("gray", "green", "magenta", "cyan", "yellow", "red", "blue")


class ResultWriter:
    """Puts one run's outputs into the viewer.

    Parameters
    ----------
    viewer : napari.Viewer
    source : napari.layers.Image
        The image that was segmented.
    model : str
        The model's name, for the layer names.
    axes : str
        The axes the source's data was read with (its channel axis included).
    index : dict
        Data index per axis letter (``{"Z": 10}``) of the slice that was segmented;
        empty for the whole image.
    meta : ModelMeta
        The model's metadata (target and class names).
    """

    def __init__(self, viewer, source, model: str, axes: str, index: dict, meta: ModelMeta):
        self.viewer, self.source, self.model, self.meta = viewer, source, model, meta
        self.index = dict(index)
        self.axes = axes
        self.out_axes = axes.replace("C", "")
        # What made the results (SegmentResult.provenance and the panel's own choices).
        self.provenance: dict = {}
        self.shape = out_shape(source, axes)
        self.kwargs = result_kwargs(source, axes)

    def _meta(self, output: str, **extra) -> dict:
        return {
            META_KEY: {
                "source": self.source.name,
                "model": self.model,
                "output": output,
                "target": self.meta.target,
                "classes": list(self.meta.classes),
                "axes": self.out_axes,
                "source_axes": self.axes,
                "provenance": self.provenance,
                **extra,
            }
        }

    def _full(self, name: str, plane: np.ndarray, ids: bool) -> np.ndarray:
        """The whole-stack array with ``plane`` in the slice that was segmented."""
        if not self.index:
            return plane
        idx = tuple(self.index.get(a, slice(None)) for a in self.out_axes)
        existing = next((lay for lay in self.viewer.layers if lay.name == name), None)
        if existing is not None and np.shape(existing.data) == self.shape:
            dtype = np.result_type(existing.data.dtype, plane.dtype)
            full = np.array(existing.data, dtype=dtype)
        else:
            full = np.zeros(self.shape, plane.dtype)
        if ids:  # new ids above those of the other slices, so no two objects share one
            full[idx] = 0
            plane = np.where(plane > 0, plane.astype(full.dtype) + full.max(), 0)
        full[idx] = plane
        return full

    def put(self, output: str, data, features: dict | None = None):
        """A labels output (``"semantic"`` or ``"instances"``); returns the layer.

        ``features`` (a per-object table with a ``label`` column, e.g. a detector's
        scores and boxes) becomes the layer's features, shown under the cursor.
        """
        name = result_name(self.source.name, self.model, output)
        plane = np.asarray(data)
        full = self._full(name, plane, ids=output == "instances")
        extra = {}
        if hasattr(features, "columns"):  # a measurement table, already with its index
            extra["features"] = features
        elif features and len(features.get("label", ())):
            table = {k: np.asarray(v) for k, v in features.items()}
            if self.index:  # the slice's ids were shifted above the other slices'
                idx = tuple(self.index.get(a, slice(None)) for a in self.out_axes)
                table["label"] = table["label"] + int(full[idx].max()) - int(plane.max())
            extra["features"] = {"index": table["label"], **table}
        return put_layer(
            self.viewer, name, full, "labels", metadata=self._meta(output), **extra, **self.kwargs
        )

    def put_probabilities(self, prob) -> None:
        """One image layer per class, hidden at first, additive so several can be shown."""
        classes = list(self.meta.classes) or [f"class {i}" for i in range(len(prob))]
        for i, p in enumerate(prob):
            cls = classes[i] if i < len(classes) else f"class {i}"
            name = result_name(self.source.name, self.model, f"probability {cls}")
            full = self._full(name, np.asarray(p, dtype=np.float32), ids=False)
            put_layer(
                self.viewer,
                name,
                full,
                "image",
                metadata=self._meta("probability", **{"class": i}),
                colormap=CLASS_COLORMAPS[i % len(CLASS_COLORMAPS)],
                contrast_limits=(0.0, 1.0),
                blending="additive",
                visible=False,
                **self.kwargs,
            )


def summary(res, meta: ModelMeta) -> str:
    """What a run found: objects for instance models, class shares for semantic ones."""
    sem = np.asarray(res.semantic)
    counts = np.bincount(sem.ravel(), minlength=len(meta.classes))
    total = max(int(counts.sum()), 1)
    names = list(meta.classes) + [f"class {i}" for i in range(len(meta.classes), len(counts))]
    shares = ", ".join(f"{names[i]} {100 * c / total:.1f}%" for i, c in enumerate(counts))
    if res.instances is None:
        return shares
    ids = np.unique(np.asarray(res.instances))
    n = int((ids > 0).sum())
    return f"{n} object{'s' if n != 1 else ''} ({shares})"
