"""The Segment dock widget: an image layer through a model into output layers."""

from __future__ import annotations

import copy
import time

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_info

from ..engine.devices import available_devices
from ..errors import SegNetError
from ..options import CRFOptions, InstanceOptions, Normalization
from ..segment import segment
from ._common import model_choices, model_name, on_models_changed, report, resolve_model
from .jobs import JobPanel, duration_text
from .layers import check_axes, layer_axes, layer_data, results_of, slice_on_screen
from .results import ResultWriter, summary

# The bundled model for grey layers and the one for colour (RGB) layers.
BY_CHANNELS = {False: "nuclei", True: "nuclei_he"}

CONSOLE_HINT = (
    "Console: import napari_segnet as ns\nns.napari.segment_layer(viewer, 'img', 'nuclei')"
)


class SegmentWidget(JobPanel, Container):
    """Segment an image layer with a bundled, trained or saved model.

    Results go to layers named ``"<image> · <model> · <output>"``; running the
    same image and model again updates them. The console equivalent is
    ``ns.napari.segment_layer(viewer, "img", "nuclei")``, which names its layers the
    same way.
    """

    run_text = "Segment"

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._models: dict = {}  # (choice, path) -> loaded model, read for the defaults
        self.image = create_widget(
            annotation="napari.layers.Image",
            label="image",
            options={"tooltip": "The image layer to segment (grey or RGB, 2D to 5D)."},
        )
        self.model = ComboBox(
            label="model",
            choices=model_choices(),
            tooltip="The network: a bundled model (nuclei for grey images, nuclei_he for "
            "RGB stained tissue), one trained in this session, or a model file.",
        )
        self.model_file = FileEdit(
            label="model file",
            filter="*.segnet *.zip *.yaml",
            visible=False,
            tooltip="A .segnet file, or a bioimage.io package (.zip or rdf.yaml).",
        )
        self.model_info = Label(value="", label="about")
        self.axes = LineEdit(
            label="axes",
            tooltip="What each dimension of the layer is: T (time), Z, C (channels), Y, X, "
            "e.g. YX, ZYX, CYX, TZYX, YXC for RGB. Guessed from the layer; a small first "
            "axis (at most 4) is taken as channels.",
        )
        self.channel = SpinBox(
            label="channel",
            min=0,
            max=0,
            visible=False,
            tooltip="Which channel (C axis, from 0) a grey model segments.",
        )
        self.device = ComboBox(
            label="device",
            choices=["auto", *available_devices()],
            tooltip="Where the network runs; auto takes a GPU when there is one.",
        )
        self.tile = SpinBox(
            label="tile size (px)",
            min=0,
            max=8192,
            step=16,
            value=0,
            tooltip="Side of the square tiles the image is cut into, in pixels (64 to 2048); "
            "0 chooses the largest that fits the device's free memory.",
        )
        self.diameter = FloatSpinBox(
            label="object diameter (px)",
            min=0,
            max=1000,
            value=0,
            tooltip="Typical object diameter in this image, in pixels (about 5 to 200); the "
            "image is rescaled to the size the model was trained on. 0 estimates it.",
        )
        self.score = FloatSpinBox(
            label="score threshold",
            min=0,
            max=1,
            step=0.05,
            value=0.5,
            visible=False,
            tooltip="Mask R-CNN models: smallest detection score (0 to 1) kept as an object; "
            "lower finds more, and more false, objects.",
        )
        self.out_prob = CheckBox(
            text="probabilities (one hidden layer per class)",
            value=False,
            tooltip="Add the probability of each class (0 to 1) as its own image layer, "
            "hidden at first; needed by the CRF panel.",
        )
        self.out_sem = CheckBox(
            text="semantic labels",
            value=True,
            tooltip="Add the most probable class of every pixel as a labels layer.",
        )
        self.out_inst = CheckBox(
            text="instance labels (instance models)",
            value=True,
            tooltip="Add one label id per object (instance models only).",
        )
        self.current = CheckBox(
            text="slice on screen only (Z/T stacks)",
            value=False,
            tooltip="Segment only the slice you are looking at; its result goes into the "
            "matching slice of the stack's result layers, the other slices are kept.",
        )
        self.crf = CheckBox(
            text="refine with dense CRF",
            value=False,
            tooltip="Snap class borders to image edges with a dense CRF (slower).",
        )
        crf = CRFOptions()
        self.crf_compat = FloatSpinBox(
            label="CRF edge weight",
            value=crf.bilateral_compat,
            min=0,
            max=100,
            visible=False,
            tooltip="Weight of the edge-aware (bilateral) term, 0 to 100; higher follows "
            "image edges more.",
        )
        self.crf_srgb = FloatSpinBox(
            label="CRF intensity width",
            value=crf.bilateral_srgb,
            min=0.1,
            max=255,
            visible=False,
            tooltip="Intensity difference (0-255 scale) that counts as an edge, 1 to 50.",
        )
        self.advanced = CheckBox(
            text="advanced settings",
            value=False,
            tooltip="Show thresholds and normalisation; their defaults are the model's own.",
        )
        self.interior = FloatSpinBox(
            label="seed threshold",
            min=0,
            max=1,
            step=0.05,
            tooltip="Interior probability (0 to 1) above which a pixel seeds an object; "
            "lower finds more, fainter objects.",
        )
        self.foreground = FloatSpinBox(
            label="object threshold",
            min=0,
            max=1,
            step=0.05,
            tooltip="Interior + boundary probability (0 to 1) above which a pixel belongs "
            "to an object; lower makes objects larger.",
        )
        self.min_size = SpinBox(
            label="smallest object (px)",
            min=0,
            max=100000,
            tooltip="Objects with fewer pixels are dropped; 0 uses 8 in 2D, 27 in 3D.",
        )
        self.norm_low = FloatSpinBox(
            label="low percentile",
            min=0,
            max=100,
            step=0.1,
            tooltip="Intensity percentile (0 to 100) mapped to 0 before the network.",
        )
        self.norm_high = FloatSpinBox(
            label="high percentile",
            min=0,
            max=100,
            step=0.1,
            tooltip="Intensity percentile (0 to 100) mapped to 1 before the network.",
        )
        self.defaults_btn = PushButton(
            text="Restore defaults", tooltip="Every setting back to its default."
        )
        self.clear_btn = PushButton(
            text="Clear results", tooltip="Remove the result layers of the chosen image."
        )
        self.hint = Label(value=CONSOLE_HINT)
        self._advanced = [self.interior, self.foreground, self.min_size]
        self._advanced += [self.norm_low, self.norm_high]
        for w in self._advanced:
            w.visible = False
        self.extend(
            [
                self.image,
                self.model,
                self.model_file,
                self.model_info,
                self.axes,
                self.channel,
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
                self.advanced,
                *self._advanced,
                self.defaults_btn,
                *self.job_controls,
                self.clear_btn,
                self.hint,
            ]
        )
        self.model.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._model_changed)
        self.image.changed.connect(self._image_changed)
        self.axes.changed.connect(self._axes_changed)
        self.crf.changed.connect(self._crf_changed)
        self.advanced.changed.connect(self._advanced_changed)
        self.run_btn.changed.connect(self.run)
        self.cancel_btn.changed.connect(self.cancel)
        self.defaults_btn.changed.connect(self.restore_defaults)
        self.clear_btn.changed.connect(self.clear_results)
        on_models_changed(self._refresh_models)
        self._image_changed(self.image.value)
        self._model_changed()

    # ---------------------------------------------------------------- UI state
    def _refresh_models(self) -> None:
        current = self.model.value
        self.model.choices = model_choices()
        if current in self.model.choices:
            self.model.value = current

    def _image_changed(self, layer) -> None:
        """Guess the axes, and pick the bundled model that fits: colour for RGB, else grey."""
        if layer is None:
            return
        self.axes.value = layer_axes(layer)
        if self.model.value in BY_CHANNELS.values():  # a chosen trained model stays
            wanted = BY_CHANNELS[bool(getattr(layer, "rgb", False))]
            if wanted in self.model.choices:
                self.model.value = wanted

    def _axes_changed(self, *_) -> None:
        layer = self.image.value
        axes = self.axes.value.strip().upper()
        shown = layer is not None and "C" in axes and not getattr(layer, "rgb", False)
        if shown and len(axes) == layer.ndim:
            self.channel.max = max(int(np.shape(layer_data(layer))[axes.index("C")]) - 1, 0)
        self.channel.visible = shown

    def _loaded(self):
        """The chosen model (loaded once per choice), or None when it cannot be read."""
        key = (self.model.value, str(self.model_file.value))
        if key not in self._models:
            try:
                self._models[key] = resolve_model(self.model.value, self.model_file.value)
            except SegNetError:
                return None
        return self._models[key]

    def _model_changed(self, *_) -> None:
        self.model_file.visible = self.model.value == "from file..."
        model = self._loaded()
        self.score.visible = model is not None and model.arch == "maskrcnn"
        if model is None:
            self.model_info.value = "choose a model file" if self.model_file.visible else ""
            return
        meta = model.metadata
        about = str(meta.extra.get("description") or "").split(". ")[0][:70]
        self.model_info.value = f"{meta.target}: {', '.join(meta.classes)}" + (
            f"\n{about}" if about else ""
        )
        self._model_defaults(model)

    def _model_defaults(self, model) -> None:
        """Thresholds and normalisation as the model stores them."""
        if model.arch == "maskrcnn":
            self.score.value = float(model.config["score_threshold"])
        meta = model.metadata
        opts, norm = meta.instance_options, meta.normalization
        self.interior.value, self.foreground.value = (
            opts.interior_threshold,
            opts.foreground_threshold,
        )
        self.min_size.value = opts.min_size or 0
        if norm.kind != "percentile":
            norm = Normalization()
        self.norm_low.value, self.norm_high.value = norm.low, norm.high
        self._advanced_changed()

    def _advanced_changed(self, *_) -> None:
        model = self._loaded()
        instances = model is not None and model.metadata.target == "instances"
        percentile = model is None or model.metadata.normalization.kind == "percentile"
        for w in self._advanced:
            w.visible = self.advanced.value
        self.interior.enabled = self.foreground.enabled = self.min_size.enabled = instances
        self.norm_low.enabled = self.norm_high.enabled = percentile

    def _crf_changed(self, value) -> None:
        self.crf_compat.visible = self.crf_srgb.visible = bool(value)

    def restore_defaults(self, *_) -> None:
        """Every setting back to its default; the advanced ones to the model's values."""
        self.device.value, self.tile.value, self.diameter.value = "auto", 0, 0
        self.out_prob.value, self.out_sem.value, self.out_inst.value = False, True, True
        self.current.value, self.crf.value, self.advanced.value = False, False, False
        crf = CRFOptions()
        self.crf_compat.value, self.crf_srgb.value = crf.bilateral_compat, crf.bilateral_srgb
        self.channel.value = 0
        if self.image.value is not None:
            self.axes.value = layer_axes(self.image.value)
        if (model := self._loaded()) is not None:
            self._model_defaults(model)

    def clear_results(self, *_) -> None:
        """Remove the result layers made from the chosen image."""
        layer = self.image.value
        for lay in results_of(self.viewer, None if layer is None else layer.name):
            self.viewer.layers.remove(lay)
        self.status.value = ""

    # ---------------------------------------------------------------- running
    def _request(self):
        layer = self.image.value
        if layer is None:
            raise SegNetError("choose an image layer first")
        model = resolve_model(self.model.value, self.model_file.value)
        meta = model.metadata
        axes = full_axes = check_axes(self.axes.value, layer)
        data = layer_data(layer)
        if "C" in axes and not layer.rgb and model.in_channels < data.shape[axes.index("C")]:
            # A grey model segments one chosen channel.
            pick = [slice(None)] * data.ndim
            pick[axes.index("C")] = min(self.channel.value, data.shape[axes.index("C")] - 1)
            data, axes = data[tuple(pick)], axes.replace("C", "")
        index: dict[int, int] = {}
        if self.current.value:
            # The stacked axes a model of model.dims dimensions does not take.
            index = slice_on_screen(self.viewer, layer, axes, "T" if model.dims == 3 else "TZ")
            data = data[tuple(index.get(i, slice(None)) for i in range(data.ndim))]
        if meta.target == "instances" or meta.normalization.kind == "percentile":
            model = copy.copy(model)  # the settings below go to this run's copy only
            model.meta = dict(model.meta)
        if meta.normalization.kind == "percentile":
            model.meta["normalization"] = Normalization(
                low=self.norm_low.value, high=self.norm_high.value
            ).to_dict()
        instance_options = None
        if meta.target == "instances":
            instance_options = InstanceOptions(
                interior_threshold=self.interior.value,
                foreground_threshold=self.foreground.value,
                min_size=self.min_size.value or None,
            )
            instance_options = {
                k: getattr(instance_options, k)
                for k in ("interior_threshold", "foreground_threshold", "min_size")
            }
        crf = (
            {"bilateral_compat": self.crf_compat.value, "bilateral_srgb": self.crf_srgb.value}
            if self.crf.value
            else False
        )
        kwargs = {
            "axes": "".join(a for i, a in enumerate(axes) if i not in index),
            "tile_size": self.tile.value or None,
            "device": self.device.value,
            "diameter": self.diameter.value or "auto",
            "crf": crf,
            "instances": None if self.out_inst.value else False,
            "instance_options": instance_options,
        }
        if model.arch == "maskrcnn":
            kwargs["detection"] = {"score_threshold": self.score.value}
        name = model_name(self.model.value, self.model_file.value, model)
        picked = {axes[i]: v for i, v in index.items()}
        writer = ResultWriter(self.viewer, layer, name, full_axes, picked, meta)
        return model, data, kwargs, writer

    def run(self, *_):
        if self.job.running:
            return
        try:
            model, data, kwargs, writer = self._request()
        except Exception as e:
            report(e)
            return
        start = time.perf_counter()
        self._start(
            lambda progress, cancel: segment(
                data, model, progress=progress, cancel=cancel, **kwargs
            ),
            f"Segmenting {writer.source.name}",
            lambda res: self._show(res, writer, time.perf_counter() - start),
            running="segmenting",
            unit="tiles",
        )

    def _show(self, res, writer: ResultWriter, seconds: float) -> None:
        if self.out_sem.value:
            writer.put("semantic", res.semantic)
        if self.out_inst.value and res.instances is not None:
            writer.put("instances", res.instances, features=res.objects)
        if self.out_prob.value:
            writer.put_probabilities(res.probabilities)
        for note in res.info.get("notes", []):
            show_info(f"napari-segnet: {note}")
        where = "slice on screen" if writer.index else ""
        self.status.value = (
            f"done{' (' + where + ')' if where else ''}: {summary(res, writer.meta)}"
            f"\n{res.info['n_tiles']} tiles in {duration_text(seconds)}{diameter_text(res.info)}"
        )


def diameter_text(info: dict) -> str:
    """The diameter a run used, for the status line ("" when none)."""
    d = info.get("diameter")
    if d is None:
        return ""
    how = "estimated" if info.get("diameter_estimated") else "given"
    return f", diameter {d:.1f} px ({how})"
