"""Boundary weight map preview and CRF refinement widgets."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    SpinBox,
    create_widget,
)
from napari.layers import Image

from ..errors import SegNetError
from ..options import CRFOptions, ModelMeta
from ..postprocess.crf import refine_crf
from ..provenance import refinement
from ..training.weights import boundary_weight_map
from ._common import report
from .jobs import JobPanel
from .layers import META_KEY, SEP, as_array, current_index, embed_plane, layer_data, put_layer
from .results import ResultWriter


class WeightMapWidget(JobPanel, Container):
    """Preview the UNet boundary weight map of a labels layer; updates as sliders move.

    The slice on screen of a stack is computed (fast enough for sliders), in the
    panel's job; the result goes to an image layer named after the labels layer,
    with contrast limits fitted to each new map.
    """

    run_text = "Update"

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.labels = create_widget(
            annotation="napari.layers.Labels",
            label="labels",
            options={"tooltip": "Instance labels (0 = background) to weigh."},
        )
        self.w0 = FloatSlider(
            label="w0",
            min=0.0,
            max=30.0,
            value=10.0,
            tooltip="Weight of the gaps between touching objects (0 to 30; the UNet paper "
            "uses 10).",
        )
        self.sigma = FloatSlider(
            label="sigma (px)",
            min=0.5,
            max=20.0,
            value=5.0,
            tooltip="Width of the gap weighting in pixels (0.5 to 20; the paper uses 5).",
        )
        self.balance = CheckBox(
            text="class balance (wc)",
            value=True,
            tooltip="Add the class balance term wc, which weighs the rarer class up.",
        )
        self.cancel_btn.visible = False  # a map takes tens of milliseconds
        self.extend([self.labels, self.w0, self.sigma, self.balance, *self.job_controls])
        for w in (self.labels, self.w0, self.sigma, self.balance):
            w.changed.connect(self._changed)
        self.run_btn.changed.connect(self.refresh)
        self._pending = False
        self._changed()  # the preview shows at once

    def _changed(self, *_):
        # A closed panel keeps its connections to the layer list: it stays quiet, as
        # does an open one whose labels layer is gone.
        if self.closed or self.labels.value is None:
            return
        self.refresh()

    def _plane(self):
        layer = self.labels.value
        if layer is None:
            raise SegNetError("choose a labels layer")
        data = np.asarray(layer_data(layer))
        index = current_index(self.viewer, layer, keep=min(layer.ndim, 2))
        return layer, data[index] if index else data, index

    def refresh(self, *_):
        if self.job.running:
            self._pending = True  # the latest slider value runs next
            return
        try:
            layer, plane, index = self._plane()
        except SegNetError as e:
            report(e)
            return
        w0, sigma, balance = self.w0.value, self.sigma.value, self.balance.value
        self._start(
            lambda progress, cancel: boundary_weight_map(
                plane, w0=w0, sigma=sigma, class_balance=balance
            ),
            f"Weight map of {layer.name}",
            lambda w: self._show(w, layer, index),
            running="computing",
        )

    def _job_finished(self) -> None:
        if self._pending:
            self._pending = False
            self.refresh()

    def _show(self, w, layer, index):
        data = embed_plane(w, layer, index, dtype=np.float32)
        put_layer(
            self.viewer,
            f"{layer.name}{SEP}weight map",
            data,
            "image",
            like=layer,
            colormap="inferno",
            contrast_limits=(0.0, float(max(w.max(), 1.0))),
        )
        self.status.value = f"weights {w.min():.2f} to {w.max():.2f}"


def _class_first(layer) -> bool:
    """Whether an image's first axis looks like classes (a few), not a Z stack."""
    return layer.ndim >= 3 and layer.data.shape[0] <= 16


def probability_sets(viewer) -> dict[str, list]:
    """Probabilities in the viewer: a Segment run's class layers, or ``(C, ...)`` images.

    Keys are what the CRF panel lists: ``"<image> · <model>"`` for a run's layers
    (sorted by class), a layer's name for an image whose first axis holds classes.
    """
    sets: dict[str, list] = {}
    for lay in viewer.layers:
        meta = lay.metadata.get(META_KEY) or {}
        if meta.get("output") == "probability":
            sets.setdefault(f"{meta['source']}{SEP}{meta['model']}", []).append(lay)
        elif isinstance(lay, Image) and not lay.rgb and not meta and _class_first(lay):
            sets[lay.name] = [lay]
    for layers in sets.values():
        layers.sort(key=lambda lay: lay.metadata.get(META_KEY, {}).get("class", 0))
    return sets


class CRFWidget(JobPanel, Container):
    """Refine probabilities against their image with the dense CRF.

    The probabilities are a Segment run's class layers (or a ``(C, ...)`` image);
    the panel proposes the image they were made from, and refines objects against
    the background when they come from an instance model. Runs in a worker thread
    with a progress bar (lattice builds and mean-field iterations) and Cancel.
    """

    run_text = "Refine"

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.prob = ComboBox(
            label="probabilities",
            choices=lambda _w: list(probability_sets(self.viewer)),
            tooltip="Class probabilities: a Segment run's (tick 'probabilities' there) or "
            "an image layer with classes on its first axis.",
        )
        self.image = create_widget(
            annotation="napari.layers.Image",
            label="image",
            options={
                "tooltip": "The image the probabilities were made from (its edges guide "
                "the refinement)."
            },
        )
        crf = CRFOptions()
        self.n_iter = SpinBox(
            label="iterations",
            min=0,
            max=50,
            value=crf.n_iter,
            tooltip="Mean-field iterations (0 to 50; 5 is usually enough).",
        )
        self.g_sxy = FloatSpinBox(
            label="smoothness width (px)",
            min=0.1,
            max=100,
            value=crf.gaussian_sxy,
            tooltip="Spatial width in pixels of the smoothing term (1 to 10).",
        )
        self.g_compat = FloatSpinBox(
            label="smoothness weight",
            min=0,
            max=100,
            value=crf.gaussian_compat,
            tooltip="Weight of the smoothing term (0 to 100; 0 turns it off).",
        )
        self.b_sxy = FloatSpinBox(
            label="edge width (px)",
            min=0.1,
            max=1000,
            value=crf.bilateral_sxy,
            tooltip="Spatial width in pixels of the edge-aware term (20 to 200).",
        )
        self.b_srgb = FloatSpinBox(
            label="edge intensity width",
            min=0.1,
            max=255,
            value=crf.bilateral_srgb,
            tooltip="Intensity difference (0-255 scale) that counts as an edge (1 to 50).",
        )
        self.b_compat = FloatSpinBox(
            label="edge weight",
            min=0,
            max=100,
            value=crf.bilateral_compat,
            tooltip="Weight of the edge-aware term (0 to 100; 0 turns it off).",
        )
        self.objects = CheckBox(
            text="objects against background",
            value=False,
            tooltip="Refine all classes but the background as one, so an instance model's "
            "thin boundary class between touching objects is kept. On for an instance "
            "model's probabilities.",
        )
        self.extend(
            [
                self.prob,
                self.image,
                self.n_iter,
                self.g_sxy,
                self.g_compat,
                self.b_sxy,
                self.b_srgb,
                self.b_compat,
                self.objects,
                *self.job_controls,
            ]
        )
        self.prob.changed.connect(self._prob_changed)
        self.run_btn.changed.connect(self.run)
        self.cancel_btn.changed.connect(self.cancel)
        self._prob_changed(self.prob.value)

    def _prob_layers(self) -> list:
        return probability_sets(self.viewer).get(self.prob.value or "", [])

    def _prob_changed(self, *_) -> None:
        """Propose the image the probabilities came from, and the matching CRF mode."""
        if self.closed:
            return
        layers = self._prob_layers()
        if not layers:
            return
        meta = layers[0].metadata.get(META_KEY) or {}
        source = meta.get("source")
        images = [lay for lay in self.viewer.layers if isinstance(lay, Image)]
        if source is None:  # a (C, ...) image: an image of its spatial shape
            shape = layers[0].data.shape[1:]
            source = next(
                (
                    lay.name
                    for lay in images
                    if lay is not layers[0]
                    and (lay.data.shape[:-1] if lay.rgb else lay.data.shape) == shape
                ),
                None,
            )
        if source is not None and source in self.viewer.layers:
            self.image.value = self.viewer.layers[source]
        self.objects.value = meta.get("target") == "instances"

    def run(self, *_):
        if self.job.running:
            return
        img_layer, layers = self.image.value, self._prob_layers()
        if img_layer is None or not layers:
            report(SegNetError("choose an image layer and probabilities"))
            return
        if img_layer in layers:
            report(SegNetError("the probabilities must be a different layer than the image"))
            return
        image = np.asarray(as_array(img_layer.data))
        if len(layers) == 1 and not layers[0].metadata.get(META_KEY):
            prob = np.asarray(as_array(layers[0].data), dtype=np.float32)
        else:
            prob = np.stack([np.asarray(as_array(lay.data), dtype=np.float32) for lay in layers])
        try:
            options = CRFOptions(
                n_iter=self.n_iter.value,
                gaussian_sxy=self.g_sxy.value,
                gaussian_compat=self.g_compat.value,
                bilateral_sxy=self.b_sxy.value,
                bilateral_srgb=self.b_srgb.value,
                bilateral_compat=self.b_compat.value,
            )
        except SegNetError as e:
            report(e)
            return
        params = {
            **options.to_dict(),
            # Every class but the first (background) refined as one.
            "foreground": tuple(range(1, len(prob))) if self.objects.value else None,
        }
        meta = layers[0].metadata.get(META_KEY) or {}
        model = f"{meta.get('model', layers[0].name)} CRF"
        classes = tuple(meta.get("classes") or (f"class {i}" for i in range(len(prob))))
        writer = ResultWriter(
            self.viewer,
            img_layer,
            model,
            "Z" * (img_layer.ndim - 2) + "YX" + ("C" if img_layer.rgb else ""),
            {},
            ModelMeta(classes=classes, target=meta.get("target", "semantic")),
        )
        writer.provenance = refinement(
            {"crf": params},
            meta.get("provenance"),
            napari={"image_layer": img_layer.name, "probabilities": [x.name for x in layers]},
        )
        self._start(
            lambda progress, cancel: refine_crf(
                image, prob, progress=progress, cancel=cancel, **params
            ),
            f"CRF on {img_layer.name}",
            lambda q: self._show(q, writer),
            running="refining",
            unit="CRF steps",
        )

    def _show(self, q, writer: ResultWriter) -> None:
        writer.put_probabilities(q)
        labels = q.argmax(0).astype(np.uint8)
        writer.put("semantic", labels)
        shares = np.bincount(labels.ravel(), minlength=len(q)) / max(labels.size, 1)
        names = writer.meta.classes
        self.status.value = "done: " + ", ".join(
            f"{names[i]} {100 * s:.1f}%" for i, s in enumerate(shares)
        )
