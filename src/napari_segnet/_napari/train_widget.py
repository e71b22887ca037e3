"""The Train dock widget: annotations in napari -> a trained model, with a live plot."""

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

from ..engine import predict
from ..engine.devices import available_devices
from ..errors import SegNetError
from ..io.model_files import save_model
from ..training import train
from ._common import JobPanel, add_session_model, report
from .layers import as_array, current_index, embed_plane, layer_axes, put_layer
from .plot import CurvePlot

PROGRESS_STEPS = 1000  # the progress bar counts thousandths of the training


class TrainWidget(JobPanel, Container):
    """Train a network on an image layer and a labels layer (dense, instances or scribbles).

    Stop keeps the best model so far. The trained model is offered by every Segment
    widget of this session and can be saved to a ``.segnet`` file.
    """

    cancelling_text = "stopping (keeping the best model)..."
    stopped_text = None  # a failed run leaves the last epoch's line

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="labels")
        self.target = ComboBox(label="labels are", choices=["instances", "semantic", "scribbles"])
        self.arch = ComboBox(
            label="architecture", choices=["unet", "deconvnet", "dilated", "maskrcnn"]
        )
        self.net_depth = SpinBox(label="depth", min=1, max=6, value=3)
        self.net_width = SpinBox(label="width", min=4, max=128, value=16)
        # Instances of 1-channel 2D images: fine-tune the bundled nuclei model (see train).
        self.pretrained = CheckBox(text="start from the bundled nuclei model", value=True)
        self.epochs = SpinBox(label="epochs (0 = time budget)", min=0, max=10000, value=0)
        self.minutes = FloatSpinBox(label="time budget (min)", min=0.1, max=1440, value=4.0)
        self.device = ComboBox(label="device", choices=["auto", *available_devices()])
        self.preview = CheckBox(text="live preview on the current slice", value=True)
        self.run_btn = PushButton(text="Train")
        self.cancel_btn = PushButton(text="Stop (keep best)", enabled=False)
        self.status = Label(value="")
        self.save_path = FileEdit(label="save as", mode="w", filter="*.segnet")
        self.save_btn = PushButton(text="Save model", enabled=False)
        self.extend(
            [
                self.image,
                self.labels,
                self.target,
                self.arch,
                self.net_depth,
                self.net_width,
                self.pretrained,
                self.epochs,
                self.minutes,
                self.device,
                self.preview,
                self.run_btn,
                self.cancel_btn,
                self.status,
                self.save_path,
                self.save_btn,
            ]
        )
        self.plot = CurvePlot()
        self.native.layout().addWidget(self.plot)
        self.run_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.stop)
        self.save_btn.changed.connect(self.save)
        self.trained = None
        self.trained_name = None

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
        if self.pretrained.value and self.arch.value == "unet":
            # Depth and width come from the bundled model where it applies; otherwise
            # train's "auto" falls back to a fresh network with the defaults.
            kwargs.update(pretrained="auto", model_options=None)
        if self.arch.value == "maskrcnn":
            # A detector has no depth; its anchors follow the labels' object size.
            kwargs["model_options"] = {"width": self.net_width.value}
        # The preview shows pixel classes, which a detector does not predict.
        preview = self.preview.value and self.arch.value != "maskrcnn"
        index = current_index(self.viewer, img_layer)
        plane = image[index] if index else image
        plane_axes = "YX" + ("C" if img_layer.rgb else "")
        device = self.device.value
        self.plot.clear()

        def run(emit, cancel):
            def progress(update):
                item = {"update": update}
                if preview and update.kind == "epoch" and update.model is not None:
                    try:
                        prob = predict(plane, update.model, axes=plane_axes, device=device)
                        item["preview"] = prob.argmax(0).astype(np.uint8)
                    except Exception:
                        pass
                emit(item)

            return train(image, labels, progress=progress, cancel=cancel, **kwargs)

        self._start(
            run,
            "Training",
            lambda m: self._done(m, img_layer),
            running="training...",
            on_yield=lambda item: self._on_update(item, img_layer, index),
            total=PROGRESS_STEPS,
        )

    def _on_update(self, item, layer, index):
        """One training report: the plot, the status line and the preview layer."""
        u = item["update"]
        if u.kind == "epoch":
            self.plot.add(u.loss, u.score)
            score = "" if u.score is None else f", validation {u.score:.3f}"
            self.status.value = f"epoch {u.epoch}: loss {u.loss:.3f}{score}"
            if "preview" in item:
                put_layer(
                    self.viewer,
                    f"{layer.name} preview",
                    embed_plane(item["preview"], layer, index, dtype=np.uint8),
                    "labels",
                    like=layer,
                    opacity=0.5,
                )
        return int(PROGRESS_STEPS * u.fraction), PROGRESS_STEPS

    def _done(self, model, layer):
        self.trained = model
        meta = model.metadata
        self.trained_name = add_session_model(f"{layer.name} ({meta.target})", model)
        self.save_btn.enabled = True
        t = meta.training
        self.status.value = (
            f"done: {t['steps']} steps in {t['seconds']:.0f} s; "
            f"'{self.trained_name}' is now in Segment"
        )

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
