"""The Segment dock widget: an image layer through a model into output layers."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_info

from ..engine.devices import available_devices
from ..errors import SegNetError
from ..options import CRFOptions
from ..segment import segment
from ._common import JobPanel, model_choices, on_models_changed, report
from ._common import resolve_model as _resolve_model
from .layers import current_index, embed_plane, layer_axes, layer_data, layer_kwargs, put_layer

# The bundled model for grey layers and the one for colour (RGB) layers.
BY_CHANNELS = {False: "nuclei", True: "nuclei_he"}

CONSOLE_HINT = (
    "Console: import napari_segnet as ns\n"
    "res = ns.segment(viewer.layers['img'].data, ns.load_model('nuclei'))"
)


class SegmentWidget(JobPanel, Container):
    """Segment an image layer with a bundled, trained or saved model.

    The console equivalent is two lines::

        import napari_segnet as ns
        res = ns.segment(viewer.layers["img"].data, ns.load_model("nuclei"))

    or, keeping scale and names, ``ns.napari.segment_layer(viewer, "img", model)``.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.model = ComboBox(label="model", choices=model_choices())
        self.model_file = FileEdit(
            label="model file", filter="*.segnet *.zip *.yaml", visible=False
        )
        self.device = ComboBox(label="device", choices=["auto", *available_devices()])
        self.tile = SpinBox(label="tile size (0 = auto)", min=0, max=8192, step=16, value=0)
        self.diameter = FloatSpinBox(label="diameter px (0 = auto)", min=0, max=1000, value=0)
        self.score = FloatSpinBox(
            label="score threshold", min=0.0, max=1.0, step=0.05, value=0.5, visible=False
        )
        self.out_prob = CheckBox(text="probabilities (image layer)", value=False)
        self.out_sem = CheckBox(text="semantic labels", value=True)
        self.out_inst = CheckBox(text="instance labels (when the model has them)", value=True)
        self.current = CheckBox(text="current slice only (Z/T stacks)", value=False)
        self.crf = CheckBox(text="refine with dense CRF", value=False)
        crf = CRFOptions()
        self.crf_compat = FloatSpinBox(
            label="CRF bilateral weight", value=crf.bilateral_compat, min=0, max=100, visible=False
        )
        self.crf_srgb = FloatSpinBox(
            label="CRF intensity width", value=crf.bilateral_srgb, min=0.1, max=255, visible=False
        )
        self.run_btn = PushButton(text="Segment")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.hint = Label(value=CONSOLE_HINT)
        self.extend(
            [
                self.image,
                self.model,
                self.model_file,
                self.device,
                self.tile,
                self.diameter,
                self.score,
                self.out_prob,
                self.out_sem,
                self.out_inst,
                self.current,
                self.crf,
                self.crf_compat,
                self.crf_srgb,
                self.run_btn,
                self.cancel_btn,
                self.status,
                self.hint,
            ]
        )
        self.model.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._show_detection_fields)
        self.image.changed.connect(self._image_changed)
        self.crf.changed.connect(self._crf_changed)
        self.run_btn.changed.connect(self.run)
        self.cancel_btn.changed.connect(self.cancel)
        on_models_changed(self._refresh_models)
        self._image_changed(self.image.value)

    # ---------------------------------------------------------------- UI state
    def _refresh_models(self) -> None:
        current = self.model.value
        self.model.choices = model_choices()
        if current in self.model.choices:
            self.model.value = current

    def _image_changed(self, layer) -> None:
        """Pick the bundled model that fits the layer: colour for RGB, grey otherwise."""
        if layer is None or self.model.value not in BY_CHANNELS.values():
            return  # the user's own choice of a trained or saved model stays
        wanted = BY_CHANNELS[bool(getattr(layer, "rgb", False))]
        if wanted in self.model.choices:
            self.model.value = wanted

    def _model_changed(self, value) -> None:
        self.model_file.visible = value == "from file..."
        self._show_detection_fields()

    def _show_detection_fields(self, *_) -> None:
        """The score threshold appears for a detection (Mask R-CNN) model."""
        try:
            model = _resolve_model(self.model.value, self.model_file.value)
        except Exception:
            self.score.visible = False
            return
        self.score.visible = model.arch == "maskrcnn"
        if self.score.visible:
            self.score.value = float(model.config["score_threshold"])

    def _crf_changed(self, value) -> None:
        self.crf_compat.visible = self.crf_srgb.visible = bool(value)

    # ---------------------------------------------------------------- running
    def _request(self):
        layer = self.image.value
        if layer is None:
            raise SegNetError("choose an image layer first")
        model = _resolve_model(self.model.value, self.model_file.value)
        data = layer_data(layer)
        axes = layer_axes(layer)
        index = None
        if self.current.value:
            # The leading (Z/T) axes a model of model.dims dimensions does not take.
            index = current_index(self.viewer, layer, keep=model.dims) or None
        if index is not None:
            data = data[index]
            axes = axes[len(index) :]
        crf = (
            {"bilateral_compat": self.crf_compat.value, "bilateral_srgb": self.crf_srgb.value}
            if self.crf.value
            else False
        )
        kwargs = {
            "axes": axes,
            "tile_size": self.tile.value or None,
            "device": self.device.value,
            "diameter": self.diameter.value or "auto",
            "crf": crf,
            "instances": None if self.out_inst.value else False,
        }
        if model.arch == "maskrcnn":
            kwargs = {
                "axes": axes,
                "tile_size": self.tile.value or None,
                "device": self.device.value,
                "detection": {"score_threshold": self.score.value},
            }
        return layer, model, data, index, kwargs

    def run(self, *_):
        if self.job.running:
            return
        try:
            layer, model, data, index, kwargs = self._request()
        except Exception as e:
            report(e)
            return
        name = f"{layer.name} [{self.model.value}]"
        self._start(
            lambda progress, cancel: segment(
                data, model, progress=progress, cancel=cancel, **kwargs
            ),
            f"Segmenting {layer.name}",
            lambda res: self._show(res, layer, name, index),
        )

    def _show(self, res, layer, name, index):
        index = index or ()
        if self.out_sem.value:
            put_layer(
                self.viewer,
                f"{name} semantic",
                embed_plane(res.semantic, layer, index),
                "labels",
                like=layer,
            )
        if self.out_inst.value and res.instances is not None:
            inst = put_layer(
                self.viewer,
                f"{name} instances",
                embed_plane(res.instances, layer, index),
                "labels",
                like=layer,
            )
            if res.objects is not None:
                # Per-object score and box, shown by napari for the label under the cursor.
                inst.features = {"index": res.objects["label"], **res.objects}
        if self.out_prob.value:
            prob = np.stack([embed_plane(p, layer, index) for p in res.probabilities])
            pkw = layer_kwargs(layer)
            for k in ("scale", "translate"):
                pkw[k] = (1.0 if k == "scale" else 0.0, *pkw[k])
            if "axis_labels" in pkw:
                pkw["axis_labels"] = ("class", *pkw["axis_labels"])
            put_layer(self.viewer, f"{name} probabilities", prob, "image", colormap="magma", **pkw)
        for note in res.info.get("notes", []):
            show_info(f"napari-segnet: {note}")
        n = 0 if res.instances is None else int(np.asarray(res.instances).max())
        self.status.value = f"done: {res.info['n_tiles']} tiles, {n} objects" + diameter_text(
            res.info
        )


def diameter_text(info: dict) -> str:
    """The diameter a run used, for the status line ("" when none)."""
    d = info.get("diameter")
    if d is None:
        return ""
    how = "estimated" if info.get("diameter_estimated") else "given"
    return f", diameter {d:.1f} px ({how})"
