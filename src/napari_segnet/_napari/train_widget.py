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
    LineEdit,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_warning

from ..engine import predict
from ..engine.devices import available_devices
from ..errors import SegNetError
from ..io.bundled import available_models, load_model
from ..io.model_files import save_model
from ..segment import segment
from ..training import train
from ..training.kinds import guess_target, target_warning
from ._common import SESSION_MODELS, add_session_model, report
from .jobs import JobPanel, duration_text
from .layers import as_array, current_index, embed_plane, layer_kwargs, put_layer
from .pairs import LABELS_FOR, labels_for, pair_arrays, split_shapes, split_text
from .plot import CurvePlot

# Fewer optimisation steps than this rarely make a useful model from scratch.
FEW_STEPS = 50
# Budgets under this many minutes are warned about: a few steps only.
SHORT_BUDGET = 2.0
# Where a run's weights come from.
NEW, BUNDLED, FILE, LAST = "new network", "bundled model", "model file", "last trained model"
# The bundled model that fits an image: colour for RGB, else grey.
BUNDLED_FOR = {True: "nuclei_he", False: "nuclei"}


class PairRow(Container):
    """One more image/labels pair, with a button that removes it."""

    def __init__(self, on_remove):
        super().__init__(layout="horizontal", labels=False)
        self.image = create_widget(
            annotation="napari.layers.Image",
            options={"tooltip": "Another image to train on."},
        )
        self.labels = create_widget(
            annotation="napari.layers.Labels",
            options={"tooltip": "The labels of that image (same size)."},
        )
        self.remove_btn = PushButton(text="Remove", tooltip="Drop this pair.")
        self.remove_btn.changed.connect(lambda *_: on_remove(self))
        self.extend([self.image, self.labels, self.remove_btn])
        self.margins = (0, 0, 0, 0)


class TrainWidget(JobPanel, Container):
    """Train a network on image/labels layer pairs (dense, instances or scribbles).

    The label kind is proposed from the labels layer, with a note when the one chosen
    looks wrong. Training starts from a new network, a bundled model, a model file or
    the model trained last in this session (fine-tuning keeps its classes and
    normalisation). Stop keeps the best model so far; the validation data held out is
    listed and outlined on the images. The trained model is offered by every Segment
    widget of this session and can be saved to a ``.segnet`` file.
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
        self.rows = Container(labels=False)
        self.rows.margins = (0, 0, 0, 0)
        self.add_btn = PushButton(
            text="Add pair",
            tooltip="Train on one more image/labels pair; all pairs train one model.",
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
        self.start_from = ComboBox(
            label="start from",
            choices=[NEW, BUNDLED, FILE, LAST],
            value=BUNDLED,
            tooltip="new network: random weights of the architecture below; bundled "
            "model / model file / last trained model: fine-tune it (its classes and "
            "normalisation are kept): a good model in minutes.",
        )
        self.bundled = ComboBox(
            label="bundled model",
            choices=available_models(),
            tooltip="nuclei: grey images; nuclei_he: RGB stained tissue (instances).",
        )
        self.start_file = FileEdit(
            label="start model file",
            mode="r",
            filter="*.segnet",
            tooltip="The .segnet model to fine-tune.",
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
        self.model_name = LineEdit(
            label="model name",
            tooltip="Name of the trained model in Segment and in its file; empty: "
            "<architecture>-<labels>.",
        )
        self.further_btn = PushButton(
            text="Train further",
            enabled=False,
            tooltip="Continue training the model this panel trained last, on the pairs chosen now.",
        )
        self.split = Label(value="", label="validation")
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
                self.rows,
                self.add_btn,
                self.target,
                self.note,
                self.start_from,
                self.bundled,
                self.start_file,
                self.arch,
                self.net_depth,
                self.net_width,
                self.epochs,
                self.minutes,
                self.device,
                self.preview,
                self.model_name,
                *self.job_controls,
                self.further_btn,
                self.split,
                self.save_path,
                self.save_btn,
            ]
        )
        self.plot = CurvePlot()
        self.native.layout().addWidget(self.plot)
        self.run_btn.changed.connect(self.start)
        self.cancel_btn.changed.connect(self.stop)
        self.save_btn.changed.connect(self.save)
        self.add_btn.changed.connect(lambda *_: self.add_pair())
        self.further_btn.changed.connect(self.train_further)
        self.labels.changed.connect(self._labels_changed)
        self.image.changed.connect(self._image_changed)
        for w in (self.target, self.arch, self.start_from, self.epochs, self.minutes):
            w.changed.connect(self._update_options)
        napari_viewer.layers.events.inserted.connect(self._layer_added)
        self.trained = None
        self.trained_name = None
        self.split.visible = False
        self._image_changed(self.image.value)
        self._labels_changed(self.labels.value)

    # ---------------------------------------------------------------- UI state
    def add_pair(self, image=None, labels=None) -> PairRow:
        """Add a row for one more image/labels pair (optionally with its layers)."""
        row = PairRow(self._remove_pair)
        self.rows.append(row)
        row.reset_choices()
        if image is not None:
            row.image.value = image
        if labels is not None:
            row.labels.value = labels
        return row

    def _remove_pair(self, row: PairRow) -> None:
        self.rows.remove(row)

    def pairs(self) -> list[tuple]:
        """The chosen (image layer, labels layer) pairs, the first one's fields first."""
        rows = [(r.image.value, r.labels.value) for r in self.rows]
        return [(self.image.value, self.labels.value), *rows]

    def _image_changed(self, layer) -> None:
        """Take the labels made for this image from a result, and the bundled model
        that fits it."""
        if layer is None:
            return
        made = labels_for(self.viewer, layer)
        if made is not None and made in self.labels.choices:
            self.labels.value = made
        self.bundled.value = BUNDLED_FOR[bool(layer.rgb)]
        self._update_options()

    def _layer_added(self, event) -> None:
        """A labels layer made from a result of an image: train on that pair."""
        layer = event.value
        image_name = layer.metadata.get(LABELS_FOR)
        if image_name is None or image_name not in self.viewer.layers or self.closed:
            return
        self.reset_choices()  # the new layer may not be among the choices yet
        image = self.viewer.layers[image_name]
        if image in self.image.choices:
            self.image.value = image
        if layer in self.labels.choices:
            self.labels.value = layer

    def _labels_changed(self, layer) -> None:
        """Propose the label kind the layer looks like (and whether to fine-tune)."""
        if layer is not None:
            self.target.value = guess_target(np.asarray(as_array(layer.data)))
            # The bundled models segment instances; other labels start a new network.
            if self.start_from.value in (NEW, BUNDLED):
                self.start_from.value = BUNDLED if self.target.value == "instances" else NEW
        self._update_options()

    def _update_options(self, *_) -> None:
        """Show what applies; say what looks wrong."""
        start = self.start_from.value
        self.bundled.visible = start == BUNDLED
        self.start_file.visible = start == FILE
        new = start == NEW
        self.arch.enabled = self.net_depth.enabled = self.net_width.enabled = new
        self.net_depth.enabled &= self.arch.value != "maskrcnn"
        self.minutes.enabled = self.epochs.value == 0
        notes = []
        layer = self.labels.value
        if layer is not None:
            warning = target_warning(np.asarray(as_array(layer.data)), self.target.value)
            if warning:
                notes.append(warning)
        if start == BUNDLED and self.target.value != "instances":
            notes.append("the bundled models segment instances: start from a new network")
        if new and self.arch.value == "maskrcnn" and self.target.value != "instances":
            notes.append("maskrcnn learns from instance labels only: choose 'instances'")
        if self.epochs.value == 0 and self.minutes.value < SHORT_BUDGET and new:
            notes.append(
                f"{self.minutes.value:g} min trains a new network for a few steps only: "
                "expect a poor model; give 10 minutes or more"
            )
        self.note.value = "\n".join(notes)
        self.note.visible = bool(notes)

    # ---------------------------------------------------------------- running
    def _start_model(self, further: bool):
        """What ``train`` starts from: an architecture name, or a model to fine-tune."""
        start = LAST if further else self.start_from.value
        if start == NEW:
            return self.arch.value
        if start == BUNDLED:
            return load_model(self.bundled.value)
        if start == FILE:
            path = self.start_file.value
            if not path or str(path) in (".", ""):
                raise SegNetError('choose the model to start from (the "start model file" field)')
            return load_model(path)
        if further and self.trained is not None:
            return self.trained
        if not SESSION_MODELS:
            raise SegNetError("no model was trained in this session yet: train one first")
        return list(SESSION_MODELS.values())[-1]

    def train_further(self, *_) -> None:
        """Continue from the model this panel trained last."""
        self.start(further=True)

    def start(self, *_, further: bool = False):
        if self.job.running:
            return
        try:
            pairs = pair_arrays(self.pairs(), self.target.value)
            start = self._start_model(further)
        except SegNetError as e:
            report(e)
            return
        if self.note.value:
            show_warning(f"napari-segnet: {self.note.value}")
        img_layer = pairs.layers[0]
        fine_tune = not isinstance(start, str)
        kwargs = {
            "model": start,
            "target": self.target.value,
            "epochs": self.epochs.value or None,
            "max_time": None if self.epochs.value else self.minutes.value * 60,
            "device": self.device.value,
            # Stacks (Z/T) train a 2D network on their annotated slices.
            # One string when the images agree, else one per image.
            "axes": pairs.axes[0] if len(set(pairs.axes)) == 1 else pairs.axes,
            "model_options": None
            if fine_tune
            else {"depth": self.net_depth.value, "width": self.net_width.value},
            "pretrained": None,
        }
        if not fine_tune and self.arch.value == "maskrcnn":  # no depth
            kwargs.update(model_options={"width": self.net_width.value})
        preview = self.preview.value
        index = current_index(self.viewer, img_layer)
        image = pairs.images[0]
        plane = image[index] if index else image
        plane_axes = "YX" + ("C" if img_layer.rgb else "")
        device = self.device.value
        budget = kwargs["max_time"]
        arch = start.arch if fine_tune else start
        self.plot.clear()
        self.split.visible = False

        def run(emit, cancel):
            def progress(update):
                item = {"update": update}
                if preview and update.kind == "epoch" and update.model is not None:
                    with contextlib.suppress(Exception):  # a preview never stops training
                        item["preview"] = _preview(plane, update.model, plane_axes, device)
                emit(item)

            return train(pairs.images, pairs.labels, progress=progress, cancel=cancel, **kwargs)

        self._start(
            run,
            "Training",
            lambda m: self._done(m, pairs, budget, arch),
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

    def _done(self, model, pairs, budget, arch):
        self.trained = model
        meta = model.metadata
        t = meta.training
        # Short: it goes into layer names.
        name = self.model_name.value.strip() or f"{arch}-{meta.target}"
        on = ", ".join(f"'{n}'" for n in pairs.names)
        model.meta["description"] = (
            f"{arch} trained in this session on {on} ({meta.target}, {t['steps']} steps)"
        )
        self.trained_name = add_session_model(name, model)
        self.save_btn.enabled = self.further_btn.enabled = True
        text = f"done: {t['steps']} steps in {duration_text(t['seconds'])}"
        if t.get("best_score") is not None:
            text += f", validation score {t['best_score']:.2f}"
        text += f"\n'{self.trained_name}' is now in Segment"
        if t["steps"] < FEW_STEPS and not t.get("fine_tuned_from"):
            text += f"\nonly {t['steps']} steps: likely undertrained, give it more time"
        if budget and t["seconds"] > 1.1 * budget:
            text += f"\ntook {duration_text(t['seconds'])} for a {duration_text(budget)} budget"
        self.status.value = text
        self._show_split(t.get("validation_split") or [], pairs)

    def _show_split(self, split: list[dict], pairs) -> None:
        """List the validation data and outline it on each image (a shapes layer)."""
        self.split.value = split_text(split, pairs)
        self.split.visible = True
        for k, layer in enumerate(pairs.layers):
            name = f"{layer.name} · validation"
            rects = split_shapes(split, pairs, k)
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            if rects:
                self.viewer.add_shapes(
                    rects,
                    shape_type="rectangle",
                    name=name,
                    edge_color="yellow",
                    face_color="transparent",
                    edge_width=2,
                    **layer_kwargs(layer),
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


def _preview(plane: np.ndarray, model, axes: str, device: str) -> np.ndarray:
    """Labels of the slice on screen: classes, or a detector's objects."""
    if model.arch == "maskrcnn":
        return segment(plane, model, axes=axes, device=device).instances.astype(np.int32)
    return predict(plane, model, axes=axes, device=device).argmax(0).astype(np.uint8)
