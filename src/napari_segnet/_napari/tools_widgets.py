"""Boundary weight map preview and CRF refinement widgets."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import (
    CheckBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import thread_worker

from ..errors import SegNetError
from ..options import CRFOptions
from ..postprocess.crf import refine_crf
from ..training.weights import boundary_weight_map
from ._common import JobPanel, report
from .layers import as_array, current_index, embed_plane, layer_data, put_layer


class WeightMapWidget(Container):
    """Preview the UNet boundary weight map of a labels layer; updates as sliders move.

    The current slice of a stack is computed (fast enough for sliders); the result
    goes to an image layer named after the labels layer.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.labels = create_widget(annotation="napari.layers.Labels", label="labels")
        self.w0 = FloatSlider(label="w0", min=0.0, max=30.0, value=10.0)
        self.sigma = FloatSlider(label="sigma (px)", min=0.5, max=20.0, value=5.0)
        self.balance = CheckBox(text="class balance (w_c)", value=True)
        self.status = Label(value="")
        self.extend([self.labels, self.w0, self.sigma, self.balance, self.status])
        for w in (self.labels, self.w0, self.sigma, self.balance):
            w.changed.connect(self._changed)
        self._worker = None
        self._pending = False

    def _changed(self, *_):
        # A closed panel keeps its connections to the layer list: it stays quiet, as
        # does an open one whose labels layer is gone.
        if self.native.parent() is None or self.labels.value is None:
            return
        self.refresh()

    def _plane(self):
        layer = self.labels.value
        if layer is None:
            raise SegNetError("choose a labels layer")
        data = np.asarray(layer_data(layer))
        index = current_index(self.viewer, layer)
        return layer, data[index] if index else data, index

    def refresh(self, *_):
        if self._worker is not None and self._worker.is_running:
            self._pending = True  # the latest slider value runs next
            return
        try:
            layer, plane, index = self._plane()
        except SegNetError as e:
            report(e)
            return
        w0, sigma, balance = self.w0.value, self.sigma.value, self.balance.value

        @thread_worker
        def work():
            return boundary_weight_map(plane, w0=w0, sigma=sigma, class_balance=balance)

        worker = work(_ignore_errors=True)  # errors become notifications (report)
        self._worker = worker
        worker.returned.connect(lambda w: self._show(w, layer, index))
        worker.errored.connect(report)
        worker.finished.connect(self._finished)
        worker.start()

    def _finished(self):
        if self._pending:
            self._pending = False
            self.refresh()

    def _show(self, w, layer, index):
        data = embed_plane(w, layer, index, dtype=np.float32)
        put_layer(
            self.viewer,
            f"{layer.name} weight map",
            data,
            "image",
            like=layer,
            colormap="inferno",
            contrast_limits=(0.0, float(max(w.max(), 1.0))),
        )
        self.status.value = f"weights {w.min():.2f} .. {w.max():.2f}"


class CRFWidget(JobPanel, Container):
    """Refine a probabilities layer ``(C, ...)`` against its image with the dense CRF.

    Runs in a worker thread with a progress bar (lattice builds and mean-field
    iterations) and a Cancel button.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.prob = create_widget(annotation="napari.layers.Image", label="probabilities")
        crf = CRFOptions()
        self.n_iter = SpinBox(label="iterations", min=0, max=50, value=crf.n_iter)
        self.g_sxy = FloatSpinBox(label="gaussian sxy", min=0.1, max=100, value=crf.gaussian_sxy)
        self.g_compat = FloatSpinBox(
            label="gaussian weight", min=0, max=100, value=crf.gaussian_compat
        )
        self.b_sxy = FloatSpinBox(label="bilateral sxy", min=0.1, max=1000, value=crf.bilateral_sxy)
        self.b_srgb = FloatSpinBox(
            label="bilateral intensity", min=0.1, max=255, value=crf.bilateral_srgb
        )
        self.b_compat = FloatSpinBox(
            label="bilateral weight", min=0, max=100, value=crf.bilateral_compat
        )
        self.objects = CheckBox(
            text="objects against background (keeps an instance model's boundary class)",
            value=False,
        )
        self.run_btn = PushButton(text="Refine")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.prob,
                self.n_iter,
                self.g_sxy,
                self.g_compat,
                self.b_sxy,
                self.b_srgb,
                self.b_compat,
                self.objects,
                self.run_btn,
                self.cancel_btn,
                self.status,
            ]
        )
        self.run_btn.changed.connect(self.run)
        self.cancel_btn.changed.connect(self.cancel)

    def run(self, *_):
        if self.job.running:
            return
        img_layer, prob_layer = self.image.value, self.prob.value
        if img_layer is None or prob_layer is None:
            report(SegNetError("choose an image layer and a probabilities layer"))
            return
        if img_layer is prob_layer:
            report(SegNetError("the probabilities must be a different layer than the image"))
            return
        image = np.asarray(as_array(img_layer.data))
        prob = np.asarray(as_array(prob_layer.data), dtype=np.float32)
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

        self._start(
            lambda progress, cancel: refine_crf(
                image, prob, progress=progress, cancel=cancel, **params
            ),
            f"CRF on {img_layer.name}",
            lambda q: self._show(q, img_layer, prob_layer),
            running="refining...",
        )

    def _show(self, q, img_layer, prob_layer):
        put_layer(
            self.viewer, f"{prob_layer.name} CRF", q, "image", like=prob_layer, colormap="magma"
        )
        put_layer(
            self.viewer,
            f"{img_layer.name} CRF labels",
            q.argmax(0).astype(np.uint8),
            "labels",
            like=img_layer,
        )
        self.status.value = "done"
