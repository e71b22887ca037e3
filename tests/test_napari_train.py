"""The Train panel on real projects and the correction loop, in a napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

import napari_segnet as ns
from napari_segnet._napari import train_widget
from napari_segnet._napari.pairs import LABELS_FOR, pair_arrays
from napari_segnet.errors import SegNetError

pytestmark = pytest.mark.gui

# Wide enough (192 px) that a validation strip is held out of each image.
SHAPE = (96, 192)


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.job.worker is not None and not widget.busy, timeout=timeout)


def _panel(viewer, name="Train"):
    return viewer.window.add_plugin_dock_widget("napari-segnet", name)[1]


def _tiny(t, start="new network"):
    """One short epoch: a small network, no preview."""
    t.start_from.value = start
    t.net_depth.value, t.net_width.value, t.epochs.value = 2, 4, 1
    t.preview.value = False


def _two_pairs(viewer):
    out = []
    for k in (1, 2):
        img, lab = ns.data.synthetic_nuclei(SHAPE, seed=k)
        out.append((viewer.add_image(img, name=f"img{k}"), viewer.add_labels(lab, name=f"lab{k}")))
    return out


def test_train_on_two_pairs_shows_the_validation_split(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    (i1, l1), (i2, l2) = _two_pairs(viewer)
    before = [lay.data.copy() for lay in (i1, l1, i2, l2)]
    t = _panel(viewer)
    t.image.value, t.labels.value = i1, l1
    row = t.add_pair(i2, l2)
    assert t.pairs() == [(i1, l1), (i2, l2)]
    _tiny(t)
    t.model_name.value = "two pairs"
    t.start()
    _wait(qtbot, t)
    rec = t.trained.meta["training"]
    assert t.trained_name == "two pairs" and "'img1', 'img2'" in t.trained.meta["description"]
    # Each image held out its right-hand strip; the panel lists and outlines it.
    split = rec["validation_split"]
    assert sorted(e["image"] for e in split) == [0, 1]
    col = round(split[0]["start"] * SHAPE[1])
    assert 0 < col < SHAPE[1] and not t.split.native.isHidden()
    assert f"'img1': X ≥ {col} px" in t.split.value and "'img2'" in t.split.value
    rect = viewer.layers["img1 · validation"].data[0]
    np.testing.assert_allclose(rect[:, 1].min() + 0.5, col)
    np.testing.assert_allclose(rect[:, 1].max() + 0.5, SHAPE[1])
    for lay, old in zip((i1, l1, i2, l2), before):
        np.testing.assert_array_equal(lay.data, old)
    # Removing the row leaves one pair.
    row.remove_btn.changed.emit(True)
    assert t.pairs() == [(i1, l1)]


def test_fine_tune_from_the_bundled_model_a_file_and_train_further(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    img, lab = ns.data.synthetic_nuclei(SHAPE, seed=1)
    viewer.add_image(img, name="img")
    viewer.add_labels(lab, name="lab")
    t = _panel(viewer)
    t.image.value, t.labels.value = viewer.layers["img"], viewer.layers["lab"]
    _tiny(t, "bundled model")
    assert t.bundled.value == "nuclei"
    t.start()
    _wait(qtbot, t)
    bundled = ns.load_model("nuclei")
    assert t.trained.meta["training"]["fine_tuned_from"] == "nuclei"
    assert t.trained.meta["normalization"] == bundled.meta["normalization"]
    assert list(t.trained.metadata.classes) == list(bundled.metadata.classes)

    # A file: its own normalisation is kept.
    own = ns.build_model("unet", n_classes=3, depth=2, width=4)
    own.meta.update(target="instances", classes=["background", "interior", "boundary"])
    own.meta["normalization"] = {"kind": "percentile", "low": 2.0, "high": 98.0}
    path = ns.save_model(own, tmp_path / "own.segnet")
    t.start_from.value = "model file"
    t.start_file.value = str(path)
    t.start()
    _wait(qtbot, t)
    assert t.trained.meta["training"]["fine_tuned_from"] == str(path)
    assert t.trained.meta["normalization"] == own.meta["normalization"]

    # Train further starts from the model the panel trained last.
    last = t.trained
    seen = {}
    real = train_widget.train

    def recording(*args, **kwargs):
        seen["model"] = kwargs["model"]
        return real(*args, **kwargs)

    monkeypatch.setattr(train_widget, "train", recording)
    assert t.further_btn.enabled
    t.train_further()
    _wait(qtbot, t)
    assert seen["model"] is last and t.trained is not last
    assert t.trained.meta["normalization"] == own.meta["normalization"]


def test_use_result_as_labels_then_train(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei(SHAPE, seed=2)
    layer = viewer.add_image(img, name="cells", scale=(0.5, 0.5))
    s = _panel(viewer, "Segment")
    t = _panel(viewer)
    s.image.value = layer
    s.model.value = "nuclei"
    s.run()
    _wait(qtbot, s)
    result = viewer.layers["cells · nuclei · instances"]
    made = s.use_as_labels()
    assert made.name == "cells labels" and made.metadata[LABELS_FOR] == "cells"
    np.testing.assert_array_equal(made.data, result.data)
    assert not np.shares_memory(made.data, result.data)
    np.testing.assert_allclose(made.scale, (0.5, 0.5))
    # The Train panel took it as the image's labels.
    assert t.image.value == layer and t.labels.value == made
    assert t.target.value == "instances"
    # A correction changes the copy only.
    kept = result.data.copy()
    made.data[:10, :10] = made.data.max() + 1
    np.testing.assert_array_equal(result.data, kept)
    # A second copy gets a new name: corrections are never overwritten.
    assert s.use_as_labels().name == "cells labels 2"
    t.labels.value = made
    _tiny(t, "bundled model")
    t.start()
    _wait(qtbot, t)
    assert t.trained is not None and t.trained.meta["training"]["steps"] > 0


def test_bad_input_notifies_and_changes_no_layer(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    (i1, l1), (i2, _) = _two_pairs(viewer)
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="small")
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="empty")
    names = [lay.name for lay in viewer.layers]
    t = _panel(viewer)
    s = _panel(viewer, "Segment")
    t.image.value, t.labels.value = i1, l1
    t.add_pair(i2, viewer.layers["small"])
    t.start()
    assert "pair 2" in errors[-1] and "differ in shape" in errors[-1]
    t.rows.clear()
    t.labels.value = viewer.layers["empty"]
    t.start()  # all zero: proposed as semantic, which needs a class besides background
    assert "single class (0)" in errors[-1]
    t.target.value = "instances"
    t.start()
    assert "no objects" in errors[-1]
    t.labels.value = l1
    t.start_from.value = "model file"
    t.start()
    assert "start model file" in errors[-1]
    s.image.value = i1
    s.use_as_labels()
    assert "segment it first" in errors[-1]
    assert [lay.name for lay in viewer.layers] == names and not t.job.running
    # A labels layer given as the image (the panel's list offers only images).
    with pytest.raises(SegNetError, match="not an image"):
        pair_arrays([(l1, l1)], "instances")


def test_layers_segment_menu_opens_the_panels(make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    app = get_app_model()
    shown = {
        item.command.id: item.command.title
        for item in app.menus.get_menu("napari/layers/segment")
        if hasattr(item, "command")
    }
    assert shown["napari-segnet.segment_widget"] == "Segment (SegNet)"
    assert shown["napari-segnet.train_widget"] == "Train (SegNet)"
    visualize = [getattr(i, "command", None) for i in app.menus.get_menu("napari/layers/visualize")]
    assert "napari-segnet.weight_map_widget" in [c.id for c in visualize if c is not None]
    app.commands.execute_command("napari-segnet.train_widget")
    assert "Train (SegNet)" in viewer.window.dock_widgets


def test_train_on_a_stack_and_an_image_validates_each_annotated_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, lab = ns.data.synthetic_nuclei(SHAPE, seed=3)
    other, other_lab = ns.data.synthetic_nuclei(SHAPE, seed=4)
    stack = viewer.add_image(np.stack([img, img, other, img, img]), name="stack")
    # The middle slice is not annotated: it is left out, not taken as background.
    stack_lab = viewer.add_labels(
        np.stack([lab, np.zeros_like(lab), other_lab, np.zeros_like(lab), np.zeros_like(lab)]),
        name="stack lab",
    )
    flat = viewer.add_image(other, name="flat")
    flat_lab = viewer.add_labels(other_lab, name="flat lab")
    t = _panel(viewer)
    t.image.value, t.labels.value = stack, stack_lab
    t.add_pair(flat, flat_lab)
    _tiny(t)
    t.start()
    _wait(qtbot, t)
    split = t.trained.meta["training"]["validation_split"]
    assert [(e["image"], e["slice"]) for e in split] == [(0, [0]), (0, [2]), (1, [])]
    assert "'stack': slice 0: X ≥ 163 px; slice 2: X ≥ 163 px" in t.split.value
    rects = viewer.layers["stack · validation"].data
    assert [r[0, 0] for r in rects] == [0, 2] and rects[0].shape == (4, 3)
