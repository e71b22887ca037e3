"""The plugin in a real napari viewer (run under Xvfb): every widget, end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from magicgui.widgets import FileEdit, Label
from magicgui.widgets.bases import ButtonWidget, ValueWidget

import napari_segnet as ns
from napari_segnet._napari import _common, jobs, segment_widget

pytestmark = pytest.mark.gui

PANELS = ("Segment", "Train", "Boundary weight map", "CRF refine")
DOCS = Path(__file__).parents[1] / "docs" / "widgets.md"


@pytest.fixture
def tiny_model():
    m = ns.build_model("unet", n_classes=3, depth=2, width=4)
    m.meta["target"] = "instances"
    m.meta["classes"] = ["background", "interior", "boundary"]
    return _common.add_session_model("tiny", m)


def _wait(qtbot, widget, timeout=60_000):
    """Until the widget's job has ended and its results (or error) were handled."""
    qtbot.waitUntil(lambda: widget.job.worker is not None and not widget.busy, timeout=timeout)


def _shown(widget) -> bool:
    """Whether the panel shows the field (the viewers of the tests are hidden)."""
    return not widget.native.isHidden()


def _fields(panel):
    return [
        w
        for w in panel
        if isinstance(w, (ValueWidget, ButtonWidget, FileEdit)) and type(w) is not Label
    ]


def test_panels_dock_with_a_tooltip_on_every_field_and_docs_name_real_fields(make_napari_viewer):
    viewer = make_napari_viewer()
    sections = re.split(r"^## ", DOCS.read_text(), flags=re.M)[1:]
    docs = {s.splitlines()[0].strip(): s for s in sections}
    for name in PANELS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-segnet", name)
        assert dock is not None and widget is not None
        fields = _fields(widget)
        assert all(w.tooltip for w in fields), [w.label for w in fields if not w.tooltip]
        # The docs page: *field* names a field's label or text, **Button** a button.
        labels = {w.label for w in fields} | {getattr(w, "text", None) for w in fields}
        buttons = {w.text for w in fields if isinstance(w, ButtonWidget)}
        text = docs[name]
        italic = set(re.findall(r"(?<![*\w])\*([^*\n]+)\*(?!\*)", text))
        bold = set(re.findall(r"\*\*([^*\n]+)\*\*", text))
        assert italic and italic <= labels, italic - labels
        assert bold <= buttons, bold - buttons


def test_open_samples(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segnet", "nuclei")
    assert viewer.layers["nuclei ground truth"].data.max() > 10
    viewer.open_sample("napari-segnet", "nuclei_3d")
    np.testing.assert_allclose(viewer.layers["nuclei 3D"].scale, (2.0, 1.0, 1.0))
    viewer.open_sample("napari-segnet", "scribbles")
    scrib = viewer.layers["scribbles"].data
    assert set(np.unique(scrib)) == {0, 1, 2}


def test_segment_widget_end_to_end(make_napari_viewer, qtbot, tiny_model, monkeypatch):
    totals = []

    class Recorded(jobs.napari_progress):
        def update(self, n=1):
            super().update(n)
            totals.append((self.n, self.total))

    monkeypatch.setattr(jobs, "napari_progress", Recorded)
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((96, 112), seed=0)
    layer = viewer.add_image(img, name="cells", scale=(0.5, 0.5), translate=(10, 20))
    before = layer.data.copy()
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = tiny_model
    w.out_prob.value = True
    w.tile.value = 64
    w.run()
    _wait(qtbot, w)
    model = _common.SESSION_MODELS[tiny_model]
    expected = ns.segment(img, model, tile_size=64)
    n_tiles = expected.info["n_tiles"]
    # Both bars counted every tile.
    assert n_tiles > 1 and totals[-1] == (n_tiles, n_tiles) and len(totals) >= n_tiles
    assert w.bar.max == n_tiles and w.bar.value == n_tiles
    sem = viewer.layers[f"cells · {tiny_model} · semantic"]
    inst = viewer.layers[f"cells · {tiny_model} · instances"]
    np.testing.assert_array_equal(sem.data, expected.semantic)
    np.testing.assert_array_equal(inst.data, expected.instances)
    np.testing.assert_allclose(sem.scale, (0.5, 0.5))
    np.testing.assert_allclose(sem.translate, (10, 20))
    # Probabilities: one hidden 2D layer per class, so no slider appears.
    for i, cls in enumerate(("background", "interior", "boundary")):
        p = viewer.layers[f"cells · {tiny_model} · probability {cls}"]
        assert p.data.shape == (96, 112) and not p.visible
        np.testing.assert_allclose(p.data, expected.probabilities[i], atol=1e-6)
    assert viewer.dims.ndim == 2
    n = int((np.unique(expected.instances) > 0).sum())
    assert w.status.value.startswith(f"done: {n} object{'s' * (n != 1)} (background ")
    # A re-run updates its layers; clear removes them; the input is untouched.
    names = [lay.name for lay in viewer.layers]
    w.run()
    _wait(qtbot, w)
    assert [lay.name for lay in viewer.layers] == names
    w.clear_results()
    assert [lay.name for lay in viewer.layers] == ["cells"]
    np.testing.assert_array_equal(layer.data, before)


def test_slice_on_screen_in_world_coordinates_keeps_the_other_slices(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    stack, _ = ns.data.synthetic_nuclei((8, 64, 64), seed=2)
    viewer.add_image(np.zeros((16, 64, 64), np.float32), name="fine")  # z scale 1
    layer = viewer.add_image(stack, name="stack", scale=(2, 1, 1))
    viewer.dims.set_point(0, 10.0)  # world z 10 is data slice 5 of "stack"
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    assert w.model.value == "nuclei"
    w.run()  # the whole stack first: objects stitched across slices
    _wait(qtbot, w)
    inst_name = "stack · nuclei · instances"
    whole = viewer.layers[inst_name].data.copy()
    w.current.value = True
    w.run()
    _wait(qtbot, w)
    expected = ns.segment(stack[5], ns.load_model("nuclei"))
    sem = viewer.layers["stack · nuclei · semantic"].data
    np.testing.assert_array_equal(sem[5], expected.semantic)
    inst = viewer.layers[inst_name].data
    others = [z for z in range(8) if z != 5]
    np.testing.assert_array_equal(inst[others], whole[others])
    # The slice's objects are the expected ones, under ids no other slice uses.
    assert len(np.unique(inst[5])) == len(np.unique(expected.instances)) > 2
    assert not set(np.unique(inst[5])[1:]) & set(np.unique(whole[others]))
    assert "slice on screen" in w.status.value


def test_axes_channels_and_status_after_error(make_napari_viewer, qtbot, tiny_model, monkeypatch):
    viewer = make_napari_viewer()
    two = np.random.default_rng(2).random((2, 64, 64)).astype(np.float32)
    layer = viewer.add_image(two, name="two channels")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    assert w.axes.value == "CYX" and _shown(w.channel) and w.channel.max == 1
    w.model.value = tiny_model
    w.channel.value = 1
    w.run()
    _wait(qtbot, w)
    sem = viewer.layers[f"two channels · {tiny_model} · semantic"].data
    expected = ns.segment(two[1], _common.SESSION_MODELS[tiny_model]).semantic
    np.testing.assert_array_equal(sem, expected)
    w.axes.value = "ZYX"
    assert not _shown(w.channel)

    def fail(*args, **kwargs):
        raise ns.SegNetError("tile_size must be at least 64\n(more detail)")

    monkeypatch.setattr(segment_widget, "segment", fail)
    w.run()
    _wait(qtbot, w)
    assert w.status.value == "failed: tile_size must be at least 64"


def test_semantic_status_and_advanced_defaults(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    m = ns.build_model("unet", n_classes=2, depth=2, width=4)
    m.meta.update(target="semantic", classes=["background", "cell"])
    name = _common.add_session_model("semantic tiny", m)
    img, _ = ns.data.synthetic_nuclei((64, 64), seed=1)
    viewer.add_image(img, name="img")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    # The advanced fields hold the model's stored values; restore brings them back.
    nuclei = ns.load_model("nuclei").metadata.instance_options
    assert (w.interior.value, w.foreground.value) == (
        nuclei.interior_threshold,
        nuclei.foreground_threshold,
    )
    w.interior.value, w.tile.value = 0.1, 128
    w.restore_defaults()
    assert w.interior.value == nuclei.interior_threshold and w.tile.value == 0
    w.model.value = name
    assert not w.interior.enabled
    w.run()
    _wait(qtbot, w)
    sem = ns.segment(img, m).semantic
    share = 100 * np.mean(sem == 1)
    assert w.status.value.splitlines()[0] == (
        f"done: background {100 - share:.1f}%, cell {share:.1f}%"
    )


def test_closing_the_panel_stops_its_job_and_nothing_lands(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    big = np.random.default_rng(1).random((1024, 1024)).astype(np.float32)
    viewer.add_image(big, name="big")
    dock, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = viewer.layers["big"]
    w.model.value = tiny_model
    w.tile.value = 32
    w.run()
    qtbot.waitUntil(lambda: w.bar.value > 0, timeout=60_000)
    job = w.job
    viewer.window.remove_dock_widget(dock)
    assert w.closed and job.detached and job.ended.is_set()
    qtbot.wait(300)
    assert [lay.name for lay in viewer.layers] == ["big"]


def test_closing_the_viewer_mid_job_leaves_python_running(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, napari
        from qtpy.QtWidgets import QApplication
        import napari_segnet as ns
        from napari_segnet._napari import _common
        m = ns.build_model("unet", n_classes=3, depth=2, width=4)
        name = _common.add_session_model("tiny", m)
        viewer = napari.Viewer(show=False)
        app = QApplication.instance()
        viewer.add_image(np.random.default_rng(1).random((1024, 1024)).astype("f4"), name="b")
        _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
        w.image.value, w.model.value, w.tile.value = viewer.layers["b"], name, 32
        w.run()
        while w.bar.value == 0:
            app.processEvents()
        job = w.job
        viewer.close()
        for _ in range(50):
            app.processEvents()
        assert job.detached and job.ended.is_set(), job.state
        print("survived")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "survived" in out.stdout
    assert "has been deleted" not in out.stderr


def test_bad_choices_notify(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.run()  # no image layer
    assert errors and "image layer" in errors[-1]
    _, t = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    t.start()
    assert "labels layer" in errors[-1]
    viewer.add_image(np.zeros((64, 64)), name="img")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="lab")
    t.image.value = viewer.layers["img"]
    t.labels.value = viewer.layers["lab"]
    t.start()
    assert "differ in shape" in errors[-1]
    w.image.value = viewer.layers["img"]
    w.axes.value = "ZYX"
    w.run()
    assert "axes 'ZYX' do not fit" in errors[-1]


def test_train_defaults_follow_the_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segnet", "scribbles")
    _, lab = ns.data.synthetic_nuclei((128, 128), seed=3)
    viewer.add_labels(lab, name="instances")
    _, t = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    t.image.value = viewer.layers["nuclei (scribbles)"]
    t.labels.value = viewer.layers["scribbles"]
    assert t.target.value == "scribbles" and t.start_from.value == "new network"
    assert not _shown(t.note) and t.net_depth.enabled
    t.labels.value = viewer.layers["instances"]
    assert t.target.value == "instances" and t.start_from.value == "bundled model"
    assert t.bundled.value == "nuclei" and _shown(t.bundled) and not _shown(t.start_file)
    assert not t.net_depth.enabled  # depth and width come from the bundled model
    t.target.value = "semantic"
    assert _shown(t.note) and "look like instance ids" in t.note.value
    assert "bundled models segment instances" in t.note.value
    t.target.value = "instances"
    t.epochs.value = 3
    assert not t.minutes.enabled
    t.epochs.value = 0
    t.start_from.value, t.minutes.value = "new network", 0.5
    assert "few steps only" in t.note.value
    assert t.minutes.min == 0.5


def test_train_widget_scribbles_preview_and_segment_list(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segnet", "scribbles")
    _, t = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    _, s = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    t.image.value = viewer.layers["nuclei (scribbles)"]
    t.labels.value = viewer.layers["scribbles"]
    t.net_depth.value, t.net_width.value, t.epochs.value = 2, 4, 2
    before = viewer.layers["scribbles"].data.copy()
    t.start()
    _wait(qtbot, t, 120_000)
    assert t.trained is not None and t.trained.meta["target"] == "scribbles"
    assert len(t.plot.loss) == 2 and t.plot.legend == ["loss"]  # no validation score
    steps = t.trained.meta["training"]["steps"]
    assert t.bar.max == steps and t.bar.value == steps
    assert "nuclei (scribbles) · training preview" in [lay.name for lay in viewer.layers]
    assert t.trained_name == "unet-scribbles"
    assert t.trained.meta["name"] == t.trained_name and t.trained_name in s.model.choices
    np.testing.assert_array_equal(viewer.layers["scribbles"].data, before)
    t.save_path.value = str(tmp_path / "mine.segnet")
    t.save()
    assert ns.load_model(tmp_path / "mine.segnet").meta["target"] == "scribbles"


def test_train_widget_stop_keeps_a_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, lab = ns.data.synthetic_nuclei((128, 128), seed=3)
    viewer.add_image(img, name="img")
    viewer.add_labels(lab, name="lab")
    _, t = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    t.image.value, t.labels.value = viewer.layers["img"], viewer.layers["lab"]
    t.start_from.value = "new network"
    t.net_depth.value, t.net_width.value, t.epochs.value = 2, 4, 500
    t.preview.value = False
    t.start()
    qtbot.waitUntil(lambda: len(t.plot.loss) >= 1, timeout=60_000)
    t.stop()
    _wait(qtbot, t)
    assert t.trained is not None and len(t.plot.loss) < 500


def test_weight_map_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, lab = ns.data.synthetic_nuclei((96, 96), seed=4)
    viewer.add_labels(lab, name="cells")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Boundary weight map")
    name = "cells · weight map"
    # The preview shows at once, without touching a slider.
    qtbot.waitUntil(lambda: name in [lay.name for lay in viewer.layers], timeout=30_000)
    np.testing.assert_allclose(viewer.layers[name].data, ns.boundary_weight_map(lab), atol=1e-6)
    w.w0.value = 25.0
    expected = ns.boundary_weight_map(lab, w0=25.0)
    qtbot.waitUntil(
        lambda: np.allclose(viewer.layers[name].data, expected, atol=1e-6), timeout=30_000
    )
    _wait(qtbot, w)
    assert viewer.layers[name].contrast_limits[1] == pytest.approx(float(expected.max()))
    # Once closed, the panel no longer answers to new labels layers.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.add_labels(lab, name="later")
    qtbot.wait(500)
    assert [lay.name for lay in viewer.layers] == ["later"]


def test_crf_widget_defaults_and_refine(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((48, 56), seed=5)
    viewer.add_image(img, name="cells")
    viewer.add_image(np.ones((60, 60)), name="other")
    _, s = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    s.image.value, s.model.value, s.out_prob.value = viewer.layers["cells"], tiny_model, True
    s.run()
    _wait(qtbot, s)
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    viewer.layers.selection.active = viewer.layers["other"]
    w.reset_choices()
    # The run's probabilities, their image, and objects against background (instances).
    assert w.prob.value == f"cells · {tiny_model}"
    assert w.image.value is viewer.layers["cells"] and w.objects.value
    w.run()
    _wait(qtbot, w)
    prob = ns.segment(img, _common.SESSION_MODELS[tiny_model]).probabilities
    expected = ns.refine_crf(img, prob, foreground=(1, 2))
    out = viewer.layers[f"cells · {tiny_model} CRF · probability interior"].data
    np.testing.assert_allclose(out, expected[1], atol=1e-5)
    labels = viewer.layers[f"cells · {tiny_model} CRF · semantic"].data
    np.testing.assert_array_equal(labels, expected.argmax(0))


def test_crf_widget_cancel(make_napari_viewer, qtbot, errors):
    # A (C, Z, Y, X) image refined slice by slice: Cancel stops it with a notice.
    viewer = make_napari_viewer()
    rng = np.random.default_rng(6)
    img = (rng.random((60, 256, 256)) * 255).astype(np.uint8)
    prob = rng.dirichlet(np.ones(3), size=(60, 256, 256)).transpose(3, 0, 1, 2)
    viewer.add_image(img, name="stack")
    viewer.add_image(prob.astype(np.float32), name="prob")
    names = [lay.name for lay in viewer.layers]
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    assert w.prob.value == "prob" and w.image.value is viewer.layers["stack"]
    assert not w.objects.value
    w.run()
    assert w.cancel_btn.enabled and not w.run_btn.enabled
    w.cancel()
    _wait(qtbot, w)
    assert [lay.name for lay in viewer.layers] == names
    assert any("cancelled" in e for e in errors)
    assert w.run_btn.enabled and not w.cancel_btn.enabled and w.status.value == "cancelled"


def test_console_helper_names_layers_like_the_panel(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((64, 64), seed=6)
    viewer.add_image(img, name="img", scale=(2, 2))
    res = ns.napari.segment_layer(viewer, "img", _common.SESSION_MODELS[tiny_model])
    assert viewer.layers[f"img · {tiny_model} · semantic"].data.shape == (64, 64)
    np.testing.assert_allclose(viewer.layers[f"img · {tiny_model} · instances"].scale, (2, 2))
    assert res.semantic.shape == (64, 64)


def test_console_hint_runs_what_the_panel_shows(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((64, 64), seed=6)
    layer = viewer.add_image(img, name="my cells")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = tiny_model
    first, line = w.hint.value.split("\n")
    assert first == "Console: import napari_segnet as ns"
    assert line == f"ns.napari.segment_layer(viewer, 'my cells', {tiny_model!r})"
    # The line itself, as typed in napari's console: the session model by its name.
    exec(line, {"ns": ns, "viewer": viewer})
    expected = ns.segment(img, _common.SESSION_MODELS[tiny_model]).semantic
    np.testing.assert_array_equal(
        viewer.layers[f"my cells · {tiny_model} · semantic"].data, expected
    )


def test_progress_text():
    assert jobs.progress_text(36, 256, 9.0, "tiles") == "36/256 tiles, about 55 s left"
    assert jobs.progress_text(5, 0, 1.0, "steps") == "5 steps"
    assert jobs.duration_text(125) == "2 min 05 s"
    assert (jobs.tiles_text(1), jobs.tiles_text(16)) == ("1 tile", "16 tiles")
