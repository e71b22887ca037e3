"""The plugin in a real napari viewer (run under Xvfb): every widget, end to end."""

from __future__ import annotations

import numpy as np
import pytest

import napari_segnet as ns
from napari_segnet._napari import _common

pytestmark = pytest.mark.gui


@pytest.fixture
def errors(monkeypatch):
    """Notifications shown by the widgets."""
    seen = []
    monkeypatch.setattr(_common, "show_error", lambda msg: seen.append(msg))
    monkeypatch.setattr(_common, "show_info", lambda msg: seen.append(msg))
    return seen


@pytest.fixture
def tiny_model():
    m = ns.build_model("unet", n_classes=3, depth=2, width=4)
    m.meta["target"] = "instances"
    return _common.add_session_model("tiny", m)


def _wait(qtbot, widget, timeout=60_000):
    """Until the widget's job has ended and its results (or error) were handled."""
    qtbot.waitUntil(lambda: widget.job.worker is not None and not widget.busy, timeout=timeout)


def test_every_manifest_widget_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in ("Segment", "Train", "Boundary weight map", "CRF refine"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-segnet", name)
        assert dock is not None and widget is not None


def test_open_samples(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segnet", "nuclei")
    assert viewer.layers["nuclei ground truth"].data.max() > 10
    viewer.open_sample("napari-segnet", "nuclei_3d")
    np.testing.assert_allclose(viewer.layers["nuclei 3D"].scale, (2.0, 1.0, 1.0))
    viewer.open_sample("napari-segnet", "scribbles")
    scrib = viewer.layers["scribbles"].data
    assert set(np.unique(scrib)) == {0, 1, 2}


def test_segment_widget_end_to_end(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((96, 112), seed=0)
    layer = viewer.add_image(img, name="cells", scale=(0.5, 0.5), translate=(10, 20))
    before = layer.data.copy()
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = tiny_model
    w.out_prob.value = True
    w.run()
    _wait(qtbot, w)
    names = [lay.name for lay in viewer.layers]
    sem = viewer.layers[f"cells [{tiny_model}] semantic"]
    assert f"cells [{tiny_model}] instances" in names
    assert viewer.layers[f"cells [{tiny_model}] probabilities"].data.shape == (3, 96, 112)
    assert sem.data.shape == (96, 112)
    np.testing.assert_allclose(sem.scale, (0.5, 0.5))
    np.testing.assert_allclose(sem.translate, (10, 20))
    expected = ns.segment(img, _common.SESSION_MODELS[tiny_model]).semantic
    np.testing.assert_array_equal(sem.data, expected)
    # A re-run updates the layers instead of adding copies; the input is untouched.
    w.run()
    _wait(qtbot, w)
    assert len(viewer.layers) == len(names)
    np.testing.assert_array_equal(layer.data, before)


def test_segment_current_slice_and_cancel(make_napari_viewer, qtbot, tiny_model, errors):
    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = tiny_model
    w.current.value = True
    w.run()
    _wait(qtbot, w)
    sem = viewer.layers[f"stack [{tiny_model}] semantic"].data
    assert sem.shape == (3, 64, 64) and sem[0].max() == 0 and sem[1].max() == 0
    # Cancel: a big image in small tiles stops early with a notice, no layer.
    big = viewer.add_image(
        np.random.default_rng(1).random((1024, 1024)).astype(np.float32), name="big"
    )
    w.image.value = big
    w.current.value = False
    w.tile.value = 32
    w.run()
    w.cancel()
    _wait(qtbot, w)
    assert f"big [{tiny_model}] semantic" not in [lay.name for lay in viewer.layers]
    assert any("cancel" in e for e in errors)


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


def test_train_widget_scribbles_preview_and_segment_list(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segnet", "scribbles")
    _, t = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    _, s = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    t.image.value = viewer.layers["nuclei (scribbles)"]
    t.labels.value = viewer.layers["scribbles"]
    t.target.value = "scribbles"
    t.net_depth.value, t.net_width.value, t.epochs.value = 2, 4, 2
    t.pretrained.value = False
    before = viewer.layers["scribbles"].data.copy()
    t.start()
    _wait(qtbot, t, 120_000)
    assert t.trained is not None and t.trained.meta["target"] == "scribbles"
    assert len(t.plot.loss) == 2
    assert "nuclei (scribbles) preview" in [lay.name for lay in viewer.layers]
    assert t.trained_name in s.model.choices
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
    t.net_depth.value, t.net_width.value, t.epochs.value = 2, 4, 500
    t.pretrained.value = False
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
    w.labels.value = viewer.layers["cells"]
    w.refresh()
    qtbot.waitUntil(
        lambda: "cells weight map" in [lay.name for lay in viewer.layers], timeout=30_000
    )
    np.testing.assert_allclose(
        viewer.layers["cells weight map"].data, ns.boundary_weight_map(lab), atol=1e-6
    )
    w.w0.value = 20.0
    qtbot.waitUntil(
        lambda: np.allclose(
            viewer.layers["cells weight map"].data, ns.boundary_weight_map(lab, w0=20.0), atol=1e-6
        ),
        timeout=30_000,
    )
    # Once closed, the panel no longer answers to new labels layers.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.add_labels(lab, name="later")
    qtbot.wait(500)
    assert [lay.name for lay in viewer.layers] == ["later"]


def test_crf_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(5)
    img = (rng.random((48, 56, 3)) * 255).astype(np.uint8)
    prob = rng.dirichlet(np.ones(3), size=(48, 56)).transpose(2, 0, 1).astype(np.float32)
    viewer.add_image(img, name="photo", rgb=True)
    viewer.add_image(prob, name="prob")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    w.image.value, w.prob.value = viewer.layers["photo"], viewer.layers["prob"]
    w.run()
    qtbot.waitUntil(
        lambda: "photo CRF labels" in [lay.name for lay in viewer.layers], timeout=30_000
    )
    np.testing.assert_allclose(viewer.layers["prob CRF"].data, ns.refine_crf(img, prob), atol=1e-5)
    # Objects against background: classes 1 and 2 refined as one.
    _wait(qtbot, w)
    w.objects.value = True
    w.run()
    expected = ns.refine_crf(img, prob, foreground=(1, 2))
    qtbot.waitUntil(
        lambda: np.allclose(viewer.layers["prob CRF"].data, expected, atol=1e-5), timeout=30_000
    )


def test_crf_widget_cancel(make_napari_viewer, qtbot, errors):
    # A stack refined slice by slice: Cancel stops it with a notice and adds no layer.
    viewer = make_napari_viewer()
    rng = np.random.default_rng(6)
    img = (rng.random((60, 256, 256)) * 255).astype(np.uint8)
    prob = rng.dirichlet(np.ones(3), size=(60, 256, 256)).transpose(3, 0, 1, 2)
    viewer.add_image(img, name="stack")
    viewer.add_image(prob.astype(np.float32), name="prob")
    names = [lay.name for lay in viewer.layers]
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    w.image.value, w.prob.value = viewer.layers["stack"], viewer.layers["prob"]
    w.run()
    assert w.cancel_btn.enabled and not w.run_btn.enabled
    w.cancel()
    _wait(qtbot, w)
    assert [lay.name for lay in viewer.layers] == names
    assert any("cancelled" in e for e in errors)
    assert w.run_btn.enabled and not w.cancel_btn.enabled and w.status.value == "stopped"


def test_console_helper(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((64, 64), seed=6)
    viewer.add_image(img, name="img", scale=(2, 2))
    res = ns.napari.segment_layer(viewer, "img", _common.SESSION_MODELS[tiny_model])
    assert viewer.layers["img semantic"].data.shape == (64, 64)
    np.testing.assert_allclose(viewer.layers["img instances"].scale, (2, 2))
    assert res.semantic.shape == (64, 64)
