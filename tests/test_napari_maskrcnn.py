"""Mask R-CNN in the panels: the Train panel's architecture, the Segment panel's score."""

from __future__ import annotations

import numpy as np
import torch

import napari_segnet as ns
from napari_segnet._napari import _common


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.job.worker is not None and not widget.busy, timeout=timeout)


def _shown(widget) -> bool:
    """Whether the panel shows the field (the viewers of the tests are hidden)."""
    return not widget.native.isHidden()


def _detector(threshold: float) -> str:
    torch.manual_seed(0)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0)
    model.config["score_threshold"] = threshold
    with torch.no_grad():  # masks that fill their boxes: the untrained network finds objects
        model.detector.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(3.0)
    model.meta["target"] = "instances"
    return _common.add_session_model("detector", model.eval())


def test_segment_panel_score_threshold_and_object_features(make_napari_viewer, qtbot):
    name = _detector(0.35)
    unet = _common.add_session_model("tiny unet", ns.build_model("unet", depth=2, width=4))
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((96, 96), seed=4, diameter=12)
    layer = viewer.add_image(img, name="cells")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = unet
    assert not _shown(w.score) and _shown(w.crf)
    w.model.value = name
    assert _shown(w.score) and w.score.value == 0.35  # the model's own threshold
    assert not _shown(w.crf)  # refused for detectors
    w.score.value = 0.3
    w.run()
    _wait(qtbot, w)
    model = _common.SESSION_MODELS[name]
    expected = ns.segment(img, model, detection={"score_threshold": 0.3})
    assert expected.instances.max() > 0
    inst = viewer.layers[f"cells · {name} · instances"]
    np.testing.assert_array_equal(inst.data, expected.instances)
    # One row per object: its label, score and box, shown under the cursor.
    np.testing.assert_array_equal(inst.features["index"], expected.objects["label"])
    np.testing.assert_allclose(inst.features["score"], expected.objects["score"])
    np.testing.assert_allclose(inst.features["x1"], expected.objects["x1"])
    assert (inst.features["score"] >= 0.3).all()
    ys, xs = np.nonzero(inst.data == 1)
    row = inst.features.iloc[0]
    assert row["y0"] - 1 <= ys.min() and ys.max() < row["y1"] + 1
    assert row["x0"] - 1 <= xs.min() and xs.max() < row["x1"] + 1


def test_train_panel_trains_a_maskrcnn(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, lab = ns.data.synthetic_nuclei((64, 64), seed=3, diameter=12)
    viewer.add_image(img, name="img")
    viewer.add_labels(lab, name="lab")
    _, t = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    _, s = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    t.image.value, t.labels.value = viewer.layers["img"], viewer.layers["lab"]
    assert "maskrcnn" in t.arch.choices
    t.start_from.value = "new network"
    t.arch.value = "maskrcnn"
    assert not t.net_depth.enabled and t.net_width.enabled
    t.net_width.value, t.epochs.value = 4, 1
    before = viewer.layers["lab"].data.copy()
    t.start()
    _wait(qtbot, t)
    assert t.trained is not None and t.trained.arch == "maskrcnn"
    assert t.trained.config["width"] == 4 and t.trained.meta["training"]["epochs"] == 1
    assert t.trained_name == "maskrcnn-instances" and t.trained_name in s.model.choices
    assert "img · training preview" in [lay.name for lay in viewer.layers]
    np.testing.assert_array_equal(viewer.layers["lab"].data, before)
    s.model.value = t.trained_name
    assert _shown(s.score)
