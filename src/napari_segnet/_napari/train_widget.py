"""The Train dock widget: annotations in napari -> a trained model, with a live plot."""

from __future__ import annotations

import contextlib

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
from napari.utils.notifications import show_warning

from ..engine import predict
from ..engine.devices import available_devices
from ..errors import SegNetError
from ..io.model_files import save_model
from ..segment import segment
from ..training import train
from ..training.kinds import guess_target, target_warning
from ._common import add_session_model, report
from .jobs import JobPanel, duration_text
from .layers import as_array, current_index, embed_plane, layer_axes, put_layer
from .plot import CurvePlot

# Fewer optimisation steps than this rarely make a useful model from scratch.
FEW_STEPS = 50
# Budgets under this many minutes are warned about: a few steps only.
SHORT_BUDGET = 2.0


class TrainWidget(JobPanel, Container):
    """Train a network on an image layer and a labels layer (dense, instances or scribbles).

    The label kind is proposed from the labels layer, with a note when the one chosen
    looks wrong. Stop keeps the best model so far. The trained model is offered by
    every Segment widget of this session and can be saved to a ``.segnet`` file.
    """

    run_text = "Train"
    cancel_text = "Stop (keep best)"
    cancelling_text = "stopping (keeping the best model)..."

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(
            annotation="napari.layers.Image",
            label="image",
            options={"tooltip": "The image the labels annotate (grey or RGB, 2D or a stack)."},
        )
        self.labels = create_widget(
            annotation="napari.layers.Labels",
            label="labels",
            options={"tooltip": "Annotations of the same size as the image."},
        )
        self.target = ComboBox(
            label="labels are",
            choices=["instances", "semantic", "scribbles"],
            tooltip="instances: one id per object (0 = background); semantic: class ids "
            "(0 = background, a few classes); scribbles: a few painted strokes, 1 = "
            "background, 2.. = classes, unpainted pixels ignored. Proposed from the layer.",
        )
        self.note = Label(value="", label="note")
        self.arch = ComboBox(
            label="architecture",
            choices=["unet", "deconvnet", "dilated", "maskrcnn"],
            tooltip="unet: the default; deconvnet: encoder-decoder; dilated: no downsampling, "
            "sharp borders, slower; maskrcnn: boxes then a mask per box (instances of 2D "
            "images; overlapping objects), slower to train.",
        )
        self.net_depth = SpinBox(
            label="depth",
            min=1,
            max=6,
            value=3,
            tooltip="Levels of the network (1 to 6); deeper sees more context.",
        )
        self.net_width = SpinBox(
            label="width",
            min=4,
            max=128,
            value=16,
            tooltip="Feature channels of the first level (4 to 128); wider learns more, slower.",
        )
        self.pretrained = CheckBox(
            text="start from the bundled nuclei model",
            value=True,
            tooltip="Fine-tune the bundled nuclei weights (UNet, instances of a grey 2D "
            "image only): good models from minutes of training. Depth and width then "
            "come from the bundled model.",
        )
        self.epochs = SpinBox(
            label="epochs",
            min=0,
            max=10000,
            value=0,
            tooltip="Passes over the training patches (1 to 10000); 0 trains for the time "
            "budget instead.",
        )
        self.minutes = FloatSpinBox(
            label="time budget (min)",
            min=0.5,
            max=1440,
            value=4.0,
            tooltip="Minutes the whole run may take (0.5 to 1440), preparation included; "
            "a few minutes are enough to fine-tune, tens to train from scratch.",
        )
        self.device = ComboBox(
            label="device",
            choices=["auto", *available_devices()],
            tooltip="Where training runs; auto takes a GPU when there is one.",
        )
        self.preview = CheckBox(
            text="live preview on the slice on screen",
            value=True,
            tooltip="After every epoch, segment the slice you are looking at into a "
            "'preview' labels layer.",
        )
        self.save_path = FileEdit(
            label="save as",
            mode="w",
            filter="*.segnet",
            tooltip="Where Save model writes the trained model (.segnet).",
        )
        self.save_btn = PushButton(
            text="Save model", enabled=False, tooltip="Write the trained model to the file."
        )
        self.extend(
            [
                self.image,
                self.labels,
                self.target,
                self.note,
                self.arch,
                self.pretrained,
                self.net_depth,
                self.net_width,
                self.epochs,
                self.minutes,
                self.device,
                self.preview,
                *self.job_controls,
                self.save_path,
                self.save_btn,
            ]
        )
        self.plot = CurvePlot()
        self.native.layout().addWidget(self.plot)
        self.run_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.stop)
        self.save_btn.changed.connect(self.save)
        self.labels.changed.connect(self._labels_changed)
        for w in (self.image, self.target, self.arch, self.pretrained, self.epochs):
            w.changed.connect(self._update_options)
        self.minutes.changed.connect(self._update_options)
        self.trained = None
        self.trained_name = None
        self._labels_changed(self.labels.value)

    # ---------------------------------------------------------------- UI state
    def _labels_changed(self, layer) -> None:
        """Propose the label kind the layer looks like."""
        if layer is not None:
            self.target.value = guess_target(np.asarray(as_array(layer.data)))
        self._update_options()

    def _pretrained_applies(self) -> bool:
        img = self.image.value
        grey_2d = img is not None and not img.rgb
        return self.arch.value == "unet" and self.target.value == "instances" and grey_2d

    def _update_options(self, *_) -> None:
        """Disable what does not apply; say what looks wrong."""
        applies = self._pretrained_applies()
        self.pretrained.enabled = applies
        from_bundled = applies and self.pretrained.value
        self.net_depth.enabled = self.net_width.enabled = not from_bundled
        self.net_depth.enabled &= self.arch.value != "maskrcnn"
        self.minutes.enabled = self.epochs.value == 0
        notes = []
        layer = self.labels.value
        if layer is not None:
            warning = target_warning(np.asarray(as_array(layer.data)), self.target.value)
            if warning:
                notes.append(warning)
        if self.arch.value == "maskrcnn" and self.target.value != "instances":
            notes.append("maskrcnn learns from instance labels only: choose 'instances'")
        if self.epochs.value == 0 and self.minutes.value < SHORT_BUDGET and not from_bundled:
            notes.append(
                f"{self.minutes.value:g} min trains a new network for a few steps only: "
                "expect a poor model; give 10 minutes or more"
            )
        self.note.value = "\n".join(notes)
        self.note.visible = bool(notes)

    # ---------------------------------------------------------------- running
    def _inputs(self):
        img_layer, lab_layer = self.image.value, self.labels.value
        if img_layer is None or lab_layer is None:
            raise SegNetError("choose an image layer and a labels layer")
        image = np.asarray(as_array(img_layer.data))
        labels = np.asarray(as_array(lab_layer.data))
        spatial = image.shape[:-1] if img_layer.rgb else image.shape
        if labels.shape != spatial:
            raise SegNetError(
                f"labels {labels.shape} and image {spatial} differ in shape: "
                "choose a labels layer of the image's size"
            )
        return img_layer, image, labels

    def start(self, *_):
        if self.job.running:
            return
        try:
            img_layer, image, labels = self._inputs()
            # Stacks (Z/T) train a 2D network on their annotated slices.
            axes = layer_axes(img_layer)
        except SegNetError as e:
            report(e)
            return
        if self.note.value:
            show_warning(f"napari-segnet: {self.note.value}")
        kwargs = {
            "model": self.arch.value,
            "target": self.target.value,
            "epochs": self.epochs.value or None,
            "max_time": None if self.epochs.value else self.minutes.value * 60,
            "device": self.device.value,
            "axes": axes,
            "model_options": {"depth": self.net_depth.value, "width": self.net_width.value},
            "pretrained": None,
        }
        if self.arch.value == "maskrcnn":  # no depth; the other options are the UNet's
            kwargs.update(model_options={"width": self.net_width.value})
        if self.pretrained.value and self._pretrained_applies():
            kwargs.update(pretrained="auto", model_options=None)
        preview = self.preview.value
        index = current_index(self.viewer, img_layer)
        plane = image[index] if index else image
        plane_axes = "YX" + ("C" if img_layer.rgb else "")
        device = self.device.value
        budget = kwargs["max_time"]
        self.plot.clear()

        def run(emit, cancel):
            def progress(update):
                item = {"update": update}
                if preview and update.kind == "epoch" and update.model is not None:
                    with contextlib.suppress(Exception):  # a preview never stops training
                        item["preview"] = _preview(plane, update.model, plane_axes, device)
                emit(item)

            return train(image, labels, progress=progress, cancel=cancel, **kwargs)

        self._start(
            run,
            "Training",
            lambda m: self._done(m, img_layer, budget),
            running="training",
            on_yield=lambda item: self._on_update(item, img_layer, index, budget),
            total=int(budget) if budget else 0,
            unit="s" if budget else "steps",
        )

    def _on_update(self, item, layer, index, budget):
        """One training report: the plot, the preview layer and the progress counts."""
        u = item["update"]
        if u.kind == "epoch":
            self.plot.add(u.loss, u.score)
            if "preview" in item:
                put_layer(
                    self.viewer,
                    f"{layer.name} · training preview",
                    embed_plane(item["preview"], layer, index, dtype=item["preview"].dtype),
                    "labels",
                    like=layer,
                    opacity=0.5,
                )
        if budget:  # bounded by time: the bars count seconds
            return min(int(u.elapsed), int(budget)), int(budget)
        total = round(u.step / u.fraction) if u.fraction > 0 else 0
        return u.step, max(total, u.step)

    def _done(self, model, layer, budget):
        self.trained = model
        meta = model.metadata
        t = meta.training
        name = f"{self.arch.value}-{meta.target}"  # short: it goes into layer names
        model.meta["description"] = (
            f"{self.arch.value} trained in this session on '{layer.name}' "
            f"({meta.target}, {t['steps']} steps)"
        )
        self.trained_name = add_session_model(name, model)
        self.save_btn.enabled = True
        text = f"done: {t['steps']} steps in {duration_text(t['seconds'])}"
        if t.get("best_score") is not None:
            text += f", validation score {t['best_score']:.2f}"
        text += f"\n'{self.trained_name}' is now in Segment"
        if t["steps"] < FEW_STEPS and not t.get("fine_tuned_from"):
            text += f"\nonly {t['steps']} steps: likely undertrained, give it more time"
        if budget and t["seconds"] > 1.1 * budget:
            text += f"\ntook {duration_text(t['seconds'])} for a {duration_text(budget)} budget"
        self.status.value = text

    def stop(self, *_):
        """Stop training; the best model so far is kept (and shown as the result)."""
        self.cancel()

    def save(self, *_):
        if self.trained is None:
            return
        path = self.save_path.value
        if not path or str(path) in (".", ""):
            report(SegNetError("choose where to save the model first"))
            return
        try:
            written = save_model(self.trained, path)
        except SegNetError as e:
            report(e)
            return
        except OSError as e:
            report(SegNetError(f"could not write {path} ({e}); choose another place to save"))
            return
        self.status.value = f"saved {written}"


def _preview(plane: np.ndarray, model, axes: str, device: str) -> np.ndarray:
    """Labels of the slice on screen: classes, or a detector's objects."""
    if model.arch == "maskrcnn":
        return segment(plane, model, axes=axes, device=device).instances.astype(np.int32)
    return predict(plane, model, axes=axes, device=device).argmax(0).astype(np.uint8)
