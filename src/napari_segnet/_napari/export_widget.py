"""The "Export to bioimage.io" dock widget: a model into a bioimage.io model package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, create_widget
from napari.utils.notifications import show_info

from ..errors import SegNetError
from ..io.bioimageio_export import export_bioimageio
from ._common import model_choices, model_name, on_models_changed, report, resolve_model
from .jobs import JobPanel
from .layers import layer_data

# Common SPDX identifiers; ns.export_bioimageio takes any other.
LICENSES = ("MIT", "Apache-2.0", "BSD-3-Clause", "CC-BY-4.0", "CC0-1.0", "GPL-3.0-only")


class ExportWidget(JobPanel, Container):
    """Write a bundled, trained or saved model as a bioimage.io model package.

    The export (:func:`napari_segnet.export_bioimageio`) runs in the panel's job: it
    segments the test image once, writes the package beside the chosen path and
    validates it with ``bioimageio.spec`` before moving it into place, so a failed
    export leaves nothing behind.
    """

    run_text = "Export"
    run_tooltip = "Write the package in the background; napari stays responsive."

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model = ComboBox(
            label="model",
            choices=model_choices(),
            tooltip="The network to share: a bundled model, one trained in this session, "
            "or a .segnet file.",
        )
        self.model_file = FileEdit(
            label="model file",
            filter="*.segnet",
            visible=False,
            tooltip="A .segnet file written by Save model or ns.save_model.",
        )
        self.pkg_name = LineEdit(
            label="name",
            tooltip="The package's name on bioimage.io; empty: the model's own name.",
        )
        self.pkg_description = LineEdit(
            label="description",
            tooltip="One sentence: what the model segments, in which images; empty: the "
            "model's own description.",
        )
        self.authors = LineEdit(
            label="authors",
            tooltip="Names separated by commas, e.g. 'Ada Lovelace, Alan Turing'.",
        )
        self.license = ComboBox(
            label="licence",
            choices=LICENSES,
            value="MIT",
            tooltip="The SPDX identifier of the licence the weights are shared under.",
        )
        self.test_image = create_widget(
            annotation="napari.layers.Image",
            label="test image",
            options={
                "nullable": True,
                "tooltip": "An image layer (2D for 2D models, a Z stack for 3D) for the "
                "package's test input and cover, cut to the model's size grid; empty: a "
                "synthetic nuclei image.",
            },
        )
        self.torchscript = CheckBox(
            text="TorchScript weights too",
            value=True,
            tooltip="Add the network as TorchScript beside the PyTorch state dict; tools "
            "that cannot run Python code (deepImageJ, for instance) use it.",
        )
        self.out = FileEdit(
            label="save as",
            mode="w",
            filter="*.zip",
            tooltip="The package to write: a .zip file (any other name writes a folder).",
        )
        self.overwrite = CheckBox(
            text="replace an existing package",
            value=False,
            tooltip="Overwrite the file or folder at 'save as' if it exists.",
        )
        self.hint = Label(value="Console: ns.export_bioimageio(model, 'model.zip')")
        # The export cannot stop half-way, and takes seconds.
        self.cancel_btn.visible = False
        self.extend(
            [
                self.model,
                self.model_file,
                self.pkg_name,
                self.pkg_description,
                self.authors,
                self.license,
                self.test_image,
                self.torchscript,
                self.out,
                self.overwrite,
                *self.job_controls,
                self.hint,
            ]
        )
        self.model.changed.connect(self._model_changed)
        self.run_btn.changed.connect(self.run)
        on_models_changed(self._refresh_models)
        self._model_changed()

    def _refresh_models(self) -> None:
        current = self.model.value
        self.model.choices = model_choices()
        if current in self.model.choices:
            self.model.value = current

    def _model_changed(self, *_) -> None:
        self.model_file.visible = self.model.value == "from file..."

    def _request(self) -> tuple:
        """The model and the keyword arguments of the export, checked in the UI thread."""
        out = str(self.out.value)
        if not out or out == ".":
            raise SegNetError('choose where to write the package first ("save as")')
        model = resolve_model(self.model.value, self.model_file.value)
        test_image = None
        if (layer := self.test_image.value) is not None:
            test_image = np.asarray(layer_data(layer))
            if layer.rgb:
                test_image = np.moveaxis(test_image, -1, 0)
        authors = [a.strip() for a in self.authors.value.split(",") if a.strip()]
        weights = ("pytorch_state_dict", "torchscript")[: 1 + self.torchscript.value]
        kwargs = {
            "name": self.pkg_name.value.strip()
            or model_name(self.model.value, self.model_file.value, model),
            "description": self.pkg_description.value.strip() or None,
            "authors": authors or None,
            "license": str(self.license.value),
            "test_image": test_image,
            "weights": weights,
            "overwrite": self.overwrite.value,
        }
        return model, Path(out), kwargs

    def run(self, *_) -> None:
        if self.job.running:
            return
        try:
            model, out, kwargs = self._request()
        except Exception as e:
            report(e)
            return
        self._start(
            lambda progress, cancel: export_bioimageio(model, out, **kwargs),
            f"Exporting to {out.name}",
            self._show,
            running="exporting",
        )

    def _show(self, path: Path) -> None:
        self.status.value = f"wrote {path}"
        show_info(f"napari-segnet: wrote the bioimage.io package {path}")
