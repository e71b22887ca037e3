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
from napari.qt.threading import thread_worker
from napari.utils import progress as napari_progress

from ..engine import predict
from ..engine.devices import available_devices
from ..io.model_files import save_model
from ..training import train
from ._common import Job, add_session_model, as_array, layer_axes, put_layer, relay, report
from .plot import CurvePlot


class TrainWidget(Container):
    """Train a network on an image layer and a labels layer (dense, instances or scribbles).

    Stop keeps the best model so far. The trained model is offered by every Segment
    widget of this session and can be saved to a ``.segnet`` file.
    """

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="labels")
        self.target = ComboBox(label="labels are", choices=["instances", "semantic", "scribbles"])
        self.arch = ComboBox(label="architecture", choices=["unet", "deconvnet", "dilated"])
        self.net_depth = SpinBox(label="depth", min=1, max=6, value=3)
        self.net_width = SpinBox(label="width", min=4, max=128, value=16)
        # Instances of 1-channel 2D images: fine-tune the bundled nuclei model (see train).
        self.pretrained = CheckBox(text="start from the bundled nuclei model", value=True)
        self.epochs = SpinBox(label="epochs (0 = time budget)", min=0, max=10000, value=0)
        self.minutes = FloatSpinBox(label="time budget (min)", min=0.1, max=1440, value=4.0)
        self.device = ComboBox(label="device", choices=["auto", *available_devices()])
        self.preview = CheckBox(text="live preview on the current slice", value=True)
        self.start_btn = PushButton(text="Train")
        self.stop_btn = PushButton(text="Stop (keep best)", enabled=False)
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
                self.start_btn,
                self.stop_btn,
                self.status,
                self.save_path,
                self.save_btn,
            ]
        )
        self.plot = CurvePlot()
        self.native.layout().addWidget(self.plot)
        self.start_btn.changed.connect(self.start)
        self.stop_btn.changed.connect(self.stop)
        self.save_btn.changed.connect(self.save)
        self.job = Job()
        self.busy = False  # True from start until results are shown
        self.trained = None
        self.trained_name = None

    def _inputs(self):
        img_layer, lab_layer = self.image.value, self.labels.value
        if img_layer is None or lab_layer is None:
            raise ValueError("choose an image layer and a labels layer")
        image = np.asarray(as_array(img_layer.data))
        labels = np.asarray(as_array(lab_layer.data))
        spatial = image.shape[:-1] if img_layer.rgb else image.shape
        if labels.shape != spatial:
            raise ValueError(f"labels {labels.shape} and image {spatial} differ in shape")
        return img_layer, image, labels

    def start(self, *_):
        if self.job.running:
            return
        try:
            img_layer, image, labels = self._inputs()
        except ValueError as e:
            from ..errors import SegNetError

            report(SegNetError(str(e)))
            return
        # Stacks (Z/T) train a 2D network on their annotated slices.
        axes = layer_axes(img_layer)
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
        job = Job()
        self.job = job
        preview = self.preview.value
        current = self._current_slice(img_layer, image)
        self.plot.clear()

        def run(emit):
            def progress(update):
                item = {"update": update}
                if preview and update.kind == "epoch" and update.model is not None:
                    try:
                        prob = predict(
                            current[0], update.model, axes=current[1], device=self.device.value
                        )
                        item["preview"] = prob.argmax(0).astype(np.uint8)
                    except Exception:
                        pass
                emit(item)

            return train(image, labels, progress=progress, cancel=job.cancel, **kwargs)

        @thread_worker
        def work():
            return (yield from relay(run))

        pbar = napari_progress(total=1000, desc="Training")
        worker = work(_ignore_errors=True)  # errors become notifications (report)
        job.worker = worker
        worker.yielded.connect(lambda item: self._on_update(item, img_layer, current, pbar))
        worker.returned.connect(lambda m: self._done(m, img_layer))
        worker.errored.connect(report)
        worker.finished.connect(lambda: self._finished(pbar))
        self.start_btn.enabled = False
        self.stop_btn.enabled = True
        self.status.value = "training..."
        self.busy = True
        worker.start()

    def _current_slice(self, layer, image):
        """The image plane on screen (for previews) and its axes."""
        rgb = int(layer.rgb)
        lead = image.ndim - rgb - 2
        if lead <= 0:
            return image, "YX" + ("C" if rgb else ""), ()
        step = self.viewer.dims.current_step
        offset = self.viewer.dims.ndim - layer.ndim
        index = tuple(int(np.clip(step[offset + i], 0, image.shape[i] - 1)) for i in range(lead))
        return image[index], "YX" + ("C" if rgb else ""), index

    def _on_update(self, item, layer, current, pbar):
        u = item["update"]
        pbar.n = int(1000 * u.fraction)
        pbar.refresh()
        if u.kind == "epoch":
            self.plot.add(u.loss, u.score)
            score = "" if u.score is None else f", validation {u.score:.3f}"
            self.status.value = f"epoch {u.epoch}: loss {u.loss:.3f}{score}"
            if "preview" in item:
                plane = item["preview"]
                if current[2]:
                    full = np.zeros(layer.data.shape[: layer.data.ndim - int(layer.rgb)], np.uint8)
                    full[current[2]] = plane
                    plane = full
                put_layer(
                    self.viewer, f"{layer.name} preview", plane, "labels", like=layer, opacity=0.5
                )

    def _done(self, model, layer):
        self.trained = model
        self.trained_name = add_session_model(f"{layer.name} ({model.meta['target']})", model)
        self.save_btn.enabled = True
        t = model.meta["training"]
        self.status.value = (
            f"done: {t['steps']} steps in {t['seconds']:.0f} s; "
            f"'{self.trained_name}' is now in Segment"
        )

    def _finished(self, pbar):
        pbar.close()
        self.start_btn.enabled = True
        self.stop_btn.enabled = False
        self.busy = False

    def stop(self, *_):
        self.job.stop()
        self.status.value = "stopping (keeping the best model)..."

    def save(self, *_):
        if self.trained is None:
            return
        path = self.save_path.value
        if not path or str(path) in (".", ""):
            from ..errors import SegNetError

            report(SegNetError("choose where to save the model first"))
            return
        written = save_model(self.trained, path)
        self.status.value = f"saved {written}"
