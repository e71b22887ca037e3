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
from ..io.bioimageio_import import is_package
from ..options import CRFOptions, InstanceOptions, Normalization
from ..segment import segment
from ._common import model_choices, model_name, on_models_changed, report, resolve_model
from .jobs import JobPanel, duration_text, tiles_text
from .layers import META_KEY, check_axes, layer_axes, layer_data, results_of, slice_on_screen
from .measurements import (
    features_of,
    intensity_image,
    measure_arrays,
    measure_layer,
    write_csv,
)
from .pairs import result_as_labels
from .results import ResultWriter, summary
from .scale import layer_spacing, layer_unit, scale_text

# The bundled model for grey layers and the one for colour (RGB) layers.
BY_CHANNELS = {False: "nuclei", True: "nuclei_he"}

CONSOLE_HINT = "Console: import napari_segnet as ns\nns.napari.segment_layer(viewer, {!r}, {!r})"


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
        self.trust = CheckBox(
            text="trust code in this package",
            value=False,
            visible=False,
            tooltip="WARNING: this bioimage.io package defines its network in Python code, "
            "and loading it runs that code with your permissions (it could read or delete "
            "files). Tick only for packages from a source you trust.",
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
        self.physical = FloatSpinBox(
            label="object diameter (layer units)",
            min=0,
            max=100000,
            value=0,
            tooltip="Typical object diameter in the layer's units (its scale, e.g. µm, as "
            "shown under pixel size); used instead of the diameter in pixels. 0: not given.",
        )
        self.pixel_size = Label(value="", label="pixel size")
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
        self.link_time = CheckBox(
            text="same id over time (T axis)",
            value=False,
            visible=False,
            tooltip="Give each object one id across frames, matched by overlap with the "
            "previous frame; a new object gets a new id. No division tracking.",
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
        self.measure_btn = PushButton(
            text="Save measurements (CSV)…",
            tooltip="Measure the objects of the chosen image's instance layer as it is now "
            "(size, shape, intensity; in the layer's units) and save them as a CSV file.",
        )
        self.labels_btn = PushButton(
            text="Use result as training labels",
            tooltip="Copy the chosen image's instance (else semantic) result to a new "
            "labels layer '<image> labels' to correct with the brush, eraser and fill; "
            "the Train panel takes it as that image's labels.",
        )
        self.hint = Label(value=CONSOLE_HINT.format("img", "nuclei"))
        self._advanced = [self.interior, self.foreground, self.min_size]
        self._advanced += [self.norm_low, self.norm_high]
        for w in self._advanced:
            w.visible = False
        self.extend(
            [
                self.image,
                self.model,
                self.model_file,
                self.trust,
                self.model_info,
                self.axes,
                self.pixel_size,
                self.channel,
                self.device,
                self.tile,
                self.diameter,
                self.physical,
                self.score,
                self.out_prob,
                self.out_sem,
                self.out_inst,
                self.current,
                self.link_time,
                self.crf,
                self.crf_compat,
                self.crf_srgb,
                self.advanced,
                *self._advanced,
                self.defaults_btn,
                *self.job_controls,
                self.clear_btn,
                self.measure_btn,
                self.labels_btn,
                self.hint,
            ]
        )
        self.model.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._model_changed)
        self.trust.changed.connect(self._model_changed)
        self.image.changed.connect(self._image_changed)
        self.axes.changed.connect(self._axes_changed)
        self.crf.changed.connect(self._crf_changed)
        self.advanced.changed.connect(self._advanced_changed)
        self.run_btn.changed.connect(self.run)
        self.cancel_btn.changed.connect(self.cancel)
        self.defaults_btn.changed.connect(self.restore_defaults)
        self.clear_btn.changed.connect(self.clear_results)
        self.measure_btn.changed.connect(lambda *_: self.save_measurements())
        self.labels_btn.changed.connect(self.use_as_labels)
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
        self._update_hint()
        if layer is None:
            return
        self.axes.value = layer_axes(layer)
        self._follow_scale(layer)
        if self.model.value in BY_CHANNELS.values():  # a chosen trained model stays
            wanted = BY_CHANNELS[bool(getattr(layer, "rgb", False))]
            if wanted in self.model.choices:
                self.model.value = wanted

    def _follow_scale(self, layer) -> None:
        """Show the layer's pixel size now and whenever its scale or units change."""
        old = getattr(self, "_scale_layer", None)
        for name in ("scale", "units"):
            for lay, connect in ((old, False), (layer, True)):
                event = getattr(getattr(lay, "events", None), name, None)
                if event is not None:
                    (event.connect if connect else event.disconnect)(self._show_scale)
        self._scale_layer = layer
        self._show_scale()

    def _show_scale(self, *_) -> None:
        """The layer's pixel size (scale and units), read for ``spacing``."""
        layer = self.image.value
        try:
            axes = check_axes(self.axes.value, layer)
            self.pixel_size.value = scale_text(layer, axes)
        except (SegNetError, AttributeError, TypeError):
            self.pixel_size.value = ""

    def _axes_changed(self, *_) -> None:
        self._show_scale()
        layer = self.image.value
        axes = self.axes.value.strip().upper()
        shown = layer is not None and "C" in axes and not getattr(layer, "rgb", False)
        if shown and len(axes) == layer.ndim:
            self.channel.max = max(int(np.shape(layer_data(layer))[axes.index("C")]) - 1, 0)
        self.channel.visible = shown
        self.link_time.visible = "T" in axes

    def _loaded(self):
        """The chosen model (loaded once per choice), or None when it cannot be read."""
        key = (self.model.value, str(self.model_file.value), self.trust.value)
        if key not in self._models:
            try:
                self._models[key] = resolve_model(*key)
            except Exception as e:  # trusted package code may raise anything
                self._load_error = e
                return None
        return self._models[key]

    def _update_hint(self, *_) -> None:
        """The console line that does what the panel would, for this layer and model."""
        layer = self.image.value
        model = self.model.value
        if model == "from file...":
            model = str(self.model_file.value)
        self.hint.value = CONSOLE_HINT.format(layer.name if layer is not None else "img", model)

    def _model_changed(self, *_) -> None:
        self._update_hint()
        from_file = self.model.value == "from file..."
        path = self.model_file.value
        self.model_file.visible = from_file
        # (.visible reads back False while the panel itself is hidden)
        self.trust.visible = from_file and is_package(path)
        self._load_error = None
        model = self._loaded()
        detector = model is not None and model.arch == "maskrcnn"
        self.score.visible = detector
        # A detector has a mask per object, no pixel classes for the CRF to refine.
        self.crf.visible = not detector
        if detector:
            self.crf.value = False
        if model is None:
            if self._load_error is not None and from_file and str(path) not in ("", "."):
                report(self._load_error)  # a file that is not a model says why at once
                self.model_info.value = "cannot be loaded: see the notification"
            else:
                self.model_info.value = "choose a model file" if from_file else ""
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
        self.physical.value = 0
        self.out_prob.value, self.out_sem.value, self.out_inst.value = False, True, True
        self.current.value, self.crf.value, self.advanced.value = False, False, False
        self.link_time.value = False
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

    def instance_layer(self):
        """The instance result layer of the chosen image (the one selected, if several)."""
        layer = self.image.value
        found = [
            lay
            for lay in results_of(self.viewer, None if layer is None else layer.name)
            if lay.metadata[META_KEY].get("output") == "instances"
        ]
        if not found:
            raise SegNetError("no instance labels of this image yet: segment it first")
        active = self.viewer.layers.selection.active
        return active if active in found else found[-1]

    def save_measurements(self, path=None):
        """Measure the instance layer as it is now and save the table as CSV.

        ``path`` None asks with a file dialog. Errors are shown as a notification and
        change nothing. Returns the path written, or None.
        """
        try:
            layer = self.instance_layer()
            if path is None:
                path = _ask_csv_path(f"{layer.name.split(' · ')[0]}_measurements.csv")
                if not path:
                    return None
            table = measure_layer(layer, self.image.value)
            written = write_csv(table, path)
        except SegNetError as e:
            report(e)
            return None
        self.status.value = f"saved {len(table)} objects' measurements to {written}"
        return written

    def use_as_labels(self, *_):
        """Copy the chosen image's result to an editable labels layer; returns it."""
        try:
            layer = result_as_labels(self.viewer, self.image.value)
        except SegNetError as e:
            report(e)
            return None
        self.status.value = f"'{layer.name}': correct it, then train on it in the Train panel"
        return layer

    # ---------------------------------------------------------------- running
    def _request(self):
        layer = self.image.value
        if layer is None:
            raise SegNetError("choose an image layer first")
        model = resolve_model(self.model.value, self.model_file.value, self.trust.value)
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
        used_axes = "".join(a for i, a in enumerate(axes) if i not in index)
        kwargs = {
            "axes": used_axes,
            "tile_size": self.tile.value or None,
            "device": self.device.value,
            "diameter": self.diameter.value or "auto",
            **physical_kwargs(self, layer, full_axes, used_axes),
            "crf": crf,
            "instances": None if self.out_inst.value else False,
            "instance_options": instance_options,
        }
        kwargs["link_time"] = self.link_time.value and "T" in kwargs["axes"]
        if model.arch == "maskrcnn":
            kwargs["detection"] = {"score_threshold": self.score.value}
        name = model_name(self.model.value, self.model_file.value, model)
        picked = {axes[i]: v for i, v in index.items()}
        writer = ResultWriter(self.viewer, layer, name, full_axes, picked, meta)
        writer.provenance = {
            "napari": {"image_layer": layer.name, "axes": full_axes, "slice": picked}
        }
        if "C" in full_axes and "C" not in axes:
            writer.provenance["napari"]["channel"] = self.channel.value
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
        measure_now = self.out_inst.value and not writer.index

        def work(progress, cancel):
            res = segment(data, model, progress=progress, cancel=cancel, **kwargs)
            table = None
            if measure_now and res.instances is not None:
                # In the worker: measuring thousands of objects takes seconds.
                image = intensity_image(writer.source, writer.axes)
                scale = writer.kwargs["scale"]
                units = getattr(writer.source, "units", None)
                table = measure_arrays(res.instances, image, res.axes, scale, units)
            return res, table

        self._start(
            work,
            f"Segmenting {writer.source.name}",
            lambda out: self._show(*out, writer, time.perf_counter() - start),
            running="segmenting",
            unit="tiles",
        )

    def _show(self, res, table, writer: ResultWriter, seconds: float) -> None:
        writer.provenance = {**res.provenance, **writer.provenance}
        if self.out_sem.value:
            writer.put("semantic", res.semantic)
        if self.out_inst.value and res.instances is not None:
            layer = writer.put("instances", res.instances, features=res.objects)
            if table is None and writer.index:  # one slice of a stack: measure it whole
                table = _measure_or_none(layer, writer.source)
            if table is not None:
                layer.features = _with_detections(features_of(table), layer.features)
        if self.out_prob.value:
            writer.put_probabilities(res.probabilities)
        for note in res.info.get("notes", []):
            show_info(f"napari-segnet: {note}")
        where = "slice on screen" if writer.index else ""
        size = diameter_text(res.info, layer_unit(writer.source, layer_axes(writer.source)))
        self.status.value = (
            f"done{' (' + where + ')' if where else ''}: {summary(res, writer.meta)}"
            f"\n{tiles_text(res.info['n_tiles'])} in {duration_text(seconds)}{size}"
        )


def _with_detections(table, current):
    """The measurements with a detector's per-object columns (score, box) joined by label."""
    if "label" not in current or "score" not in current:
        return table
    extra = current.drop(columns=[c for c in current.columns if c in table and c != "label"])
    return table.merge(extra, on="label", how="left")


def _measure_or_none(layer, source):
    try:
        return measure_layer(layer, source)
    except SegNetError as e:
        report(e)
        return None


def _ask_csv_path(name: str) -> str | None:
    """A save-file dialog for a CSV file; None when cancelled."""
    from magicgui.application import use_app

    show = use_app().get_obj("show_file_dialog")
    return show(mode="w", caption="Save measurements", start_path=name, filter="*.csv") or None


def physical_kwargs(panel: SegmentWidget, layer, axes: str, used_axes: str) -> dict:
    """``spacing`` from the layer's scale and ``physical_diameter`` from the panel."""
    spacing = layer_spacing(layer, axes, used_axes)
    if not panel.physical.value:
        return {"spacing": spacing}
    if spacing is None:
        raise SegNetError(
            "the layer has no pixel size (scale 1, in pixels): set its scale (and units), "
            "or give the object diameter in pixels"
        )
    if panel.diameter.value:
        raise SegNetError("give the object diameter in pixels or in layer units, not both")
    return {"spacing": spacing, "physical_diameter": panel.physical.value}


def diameter_text(info: dict, unit: str = "units") -> str:
    """The diameter a run used, for the status line ("" when none)."""
    d = info.get("diameter")
    if d is None:
        return ""
    how = "estimated" if info.get("diameter_estimated") else "given"
    if info.get("zoom_reason") == "pixel size":
        how = "from the model's pixel size"
    if info.get("physical_diameter") is not None:
        return f", diameter {d:.1f} px = {info['physical_diameter']:.3g} {unit} ({how})"
    return f", diameter {d:.1f} px ({how})"
