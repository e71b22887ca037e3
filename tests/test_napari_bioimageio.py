"""bioimage.io in napari (run under Xvfb): the export panel and packages in the Segment panel."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from magicgui.widgets import PushButton

import napari_segnet as ns
from napari_segnet._napari import _common, export_widget
from napari_segnet.io.bioimageio_import import describe

from .test_bioimageio import _foreign_package
from .test_napari import _fields, _shown, _wait

pytest.importorskip("bioimageio.spec")
pytestmark = pytest.mark.gui

DOCS = Path(__file__).parents[1] / "docs" / "widgets.md"
PANEL = "Export to bioimage.io"


@pytest.fixture
def notes(monkeypatch):
    """Notifications shown by the panels: errors and infos."""
    seen = []
    monkeypatch.setattr(_common, "show_error", lambda msg: seen.append(("error", msg)))
    monkeypatch.setattr(_common, "show_info", lambda msg: seen.append(("info", msg)))
    monkeypatch.setattr(export_widget, "show_info", lambda msg: seen.append(("info", msg)))
    return seen


@pytest.fixture
def small_model():
    m = ns.build_model("unet", n_classes=3, depth=2, width=4)
    m.meta.update(target="instances", classes=["background", "interior", "boundary"])
    return _common.add_session_model("small", m)


def test_export_panel_docks_with_tooltips_and_the_docs_name_its_fields(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, w = viewer.window.add_plugin_dock_widget("napari-segnet", PANEL)
    assert dock is not None and isinstance(w, export_widget.ExportWidget)
    fields = _fields(w)
    assert all(f.tooltip for f in fields), [f.label for f in fields if not f.tooltip]
    section = re.split(r"^## ", DOCS.read_text(), flags=re.M)
    text = next(s for s in section if s.startswith(PANEL))
    labels = {f.label for f in fields} | {getattr(f, "text", None) for f in fields}
    buttons = {f.text for f in fields if isinstance(f, PushButton)}
    italic = set(re.findall(r"(?<![*\w])\*([^*\n]+)\*(?!\*)", text))
    bold = set(re.findall(r"\*\*([^*\n]+)\*\*", text))
    assert italic and italic <= labels, italic - labels
    assert bold and bold <= buttons, bold - buttons


def test_export_panel_writes_a_package_that_loads_and_segments_alike(
    make_napari_viewer, qtbot, tmp_path, small_model, notes
):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((80, 72), seed=4)
    layer = viewer.add_image(img, name="cells")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", PANEL)
    w.model.value = small_model
    w.pkg_name.value = "small unet"
    w.authors.value = "Ada Lovelace, Alan Turing"
    w.license.value = "CC-BY-4.0"
    w.test_image.value = layer
    w.torchscript.value = False
    w.out.value = tmp_path / "small.zip"
    w.run()
    _wait(qtbot, w)
    path = tmp_path / "small.zip"
    assert w.status.value == f"wrote {path}", (w.status.value, notes)
    assert ("info", f"napari-segnet: wrote the bioimage.io package {path}") in notes
    with zipfile.ZipFile(path) as z:
        test_input = np.load(z.open("test_input.npy"))
    # the layer, cut to the size grid, is the test input
    h, wd = test_input.shape[2:]
    np.testing.assert_array_equal(test_input[0, 0], img[:h, :wd])
    descr = describe(path)
    assert str(descr.name) == "small unet" and str(descr.license) == "CC-BY-4.0"
    assert [str(a.name) for a in descr.authors] == ["Ada Lovelace", "Alan Turing"]
    assert set(descr.weights.available_formats) == {"pytorch_state_dict"}
    native = _common.SESSION_MODELS[small_model]
    again = ns.load_model(path)
    other, _ = ns.data.synthetic_nuclei((70, 90), seed=8)
    want = ns.segment(other, native, diameter=None, tile_size=64).probabilities
    got = ns.segment(other, again, diameter=None, tile_size=64).probabilities
    assert np.abs(got - want).max() <= 1e-4
    np.testing.assert_array_equal(layer.data, img)


def test_export_panel_errors_notify_and_write_nothing(
    make_napari_viewer, qtbot, tmp_path, small_model, notes
):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", PANEL)
    w.model.value = small_model
    w.run()  # no path yet
    assert notes[-1][0] == "error" and "save as" in notes[-1][1]
    w.out.value = tmp_path / "m.zip"
    w.test_image.value = viewer.add_image(np.zeros((10, 10), np.float32), name="tiny")
    w.run()
    _wait(qtbot, w)
    assert notes[-1][0] == "error" and "at least" in notes[-1][1]
    assert w.status.value.startswith("failed: test_image is (10, 10) px")
    (tmp_path / "m.zip").write_bytes(b"keep me")
    w.test_image.value = None
    w.run()
    _wait(qtbot, w)
    assert notes[-1][0] == "error" and "overwrite" in notes[-1][1]
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]
    assert (tmp_path / "m.zip").read_bytes() == b"keep me"


def test_trust_checkbox_runs_a_package_with_python_code_only_when_ticked(
    make_napari_viewer, qtbot, tmp_path, notes
):
    package = _foreign_package(tmp_path)
    viewer = make_napari_viewer()
    img = np.random.default_rng(5).normal(50.0, 10.0, (72, 80)).astype(np.float32)
    viewer.add_image(img, name="img")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    assert not _shown(w.trust)
    w.model.value = "from file..."
    w.model_file.value = package
    assert _shown(w.trust) and not w.trust.value and "WARNING" in w.trust.tooltip
    assert notes[-1][0] == "error" and "trust code in this package" in notes[-1][1]
    assert w.model_info.value.startswith("cannot be loaded")
    w.run()
    assert notes[-1][0] == "error" and "Python code" in notes[-1][1]
    assert [lay.name for lay in viewer.layers] == ["img"]
    w.trust.value = True
    assert w.model_info.value.startswith("semantic: cells")
    w.tile.value = 64
    w.run()
    _wait(qtbot, w)
    sem = viewer.layers["img · tiny foreign unet · semantic"].data
    model = ns.load_model(package, trust_code=True)
    expected = ns.segment(img, model, "YX", tile_size=64, device="cpu").semantic
    np.testing.assert_array_equal(sem, expected)
    assert 0 < sem.mean() < 1  # both classes present: not a trivial comparison


def test_invalid_package_notifies_and_adds_no_layer(make_napari_viewer, qtbot, tmp_path, notes):
    not_a_package = tmp_path / "photos.zip"
    with zipfile.ZipFile(not_a_package, "w") as z:
        z.writestr("a.txt", "hello")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.model.value = "from file..."
    w.model_file.value = not_a_package
    assert notes[-1] == (
        "error",
        f"napari-segnet: {not_a_package} is a zip file but not a bioimage.io package (no rdf.yaml)",
    )
    assert not _shown(w.trust)
    w.run()
    assert notes[-1][0] == "error" and "not a bioimage.io package" in notes[-1][1]
    assert [lay.name for lay in viewer.layers] == ["img"]
