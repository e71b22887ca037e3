"""Measurements, provenance and time-lapse ids in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import napari_segnet as ns
from napari_segnet._napari.layers import META_KEY
from tests.test_provenance import independent_hash
from tests.test_tracking import kept_ids

pytestmark = pytest.mark.gui


def _wait(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.job.worker is not None and not widget.busy, timeout=timeout)


def _segmented(make_napari_viewer, qtbot, image, scale, **fields):
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="cells", scale=scale)
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = "nuclei"
    w.device.value = "cpu"
    for name, value in fields.items():
        getattr(w, name).value = value
    w.run()
    _wait(qtbot, w)
    return viewer, layer, w


def test_features_equal_numpy_measurements_and_metadata_holds_provenance(make_napari_viewer, qtbot):
    img, _ = ns.data.synthetic_nuclei((128, 144), seed=1)
    viewer, _, _ = _segmented(make_napari_viewer, qtbot, img, (0.5, 0.5), tile=64)
    inst = viewer.layers["cells · nuclei · instances"]
    labels = np.asarray(inst.data)
    ids = np.unique(labels)[1:]
    feats = inst.features
    assert len(ids) > 10 and len(feats) == len(ids)
    assert list(feats["label"]) == list(ids) and list(feats["index"]) == list(ids)
    for _, row in feats.iterrows():
        mask = labels == row["label"]
        ys, xs = np.nonzero(mask)
        assert row["area_um2"] == pytest.approx(mask.sum() * 0.25)
        assert row["centroid_y_um"] == pytest.approx(ys.mean() * 0.5)
        assert row["centroid_x_um"] == pytest.approx(xs.mean() * 0.5)
        assert row["mean_intensity"] == pytest.approx(img[mask].mean())
        assert row["integrated_intensity"] == pytest.approx(img[mask].sum(), rel=1e-6)
    # Hovering an object shows its row.
    y, x = np.argwhere(labels == ids[0])[0]
    status = inst.get_status((y, x), world=False)["coordinates"]
    assert "area_um2" in status
    # Provenance: the model's hash, computed independently, and the run's settings.
    expected = independent_hash(ns.load_model("nuclei"))
    for name in ("instances", "semantic"):
        prov = viewer.layers[f"cells · nuclei · {name}"].metadata[META_KEY]["provenance"]
        assert prov["model"]["weights_sha256"] == expected
        assert prov["model"]["name"] == "nuclei"
        assert prov["parameters"]["tile_size"] == 64
        assert prov["parameters"]["device"] == "cpu"
        assert prov["parameters"]["crf"] is False
        assert prov["software"]["version"] == ns.__version__
        assert prov["time"].endswith("+00:00")
        assert prov["napari"]["image_layer"] == "cells"


def test_save_measurements_csv_and_bad_paths(make_napari_viewer, qtbot, tmp_path, errors):
    img, _ = ns.data.synthetic_nuclei((96, 96), seed=2)
    viewer, layer, w = _segmented(make_napari_viewer, qtbot, img, (1.0, 1.0))
    inst = viewer.layers["cells · nuclei · instances"]
    # A correction before saving: the CSV measures the layer as it is now.
    data = np.array(inst.data)
    gone = int(np.unique(data)[1])
    data[data == gone] = 0
    inst.data = data
    written = w.save_measurements(tmp_path / "cells.csv")
    table = pd.read_csv(written)
    assert gone not in set(table["label"])
    assert len(table) == len(np.unique(data)) - 1
    assert "area_px2" in table and "index" not in table
    assert table["n_pixels"].sum() == (data > 0).sum()
    before = (np.array(inst.data), inst.features.copy(), [lay.name for lay in viewer.layers])
    for bad in (tmp_path / "no such folder" / "m.csv", tmp_path):
        errors.clear()
        assert w.save_measurements(bad) is None
        assert errors and ("cannot write" in errors[0] or "folder" in errors[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv"]
    # The image changed shape since it was segmented: a clear error, nothing changed.
    layer.data = img[:80]
    errors.clear()
    assert w.save_measurements(tmp_path / "other.csv") is None
    assert errors and "shape" in errors[0]
    assert not (tmp_path / "other.csv").exists()
    np.testing.assert_array_equal(inst.data, before[0])
    pd.testing.assert_frame_equal(inst.features, before[1])
    assert [lay.name for lay in viewer.layers] == before[2]


def test_save_measurements_without_results_notifies(make_napari_viewer, errors, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="empty")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    assert w.save_measurements(tmp_path / "x.csv") is None
    assert errors and "segment it first" in errors[0]
    assert not (tmp_path / "x.csv").exists()


def test_time_lapse_ids_linked_from_the_panel(make_napari_viewer, qtbot):
    images, gt = ns.data.synthetic_timelapse(4, (128, 128), seed=4, step=3.0)
    viewer = make_napari_viewer()
    layer = viewer.add_image(images, name="movie")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.axes.value = "TYX"
    assert not w.link_time.native.isHidden()  # offered for a T axis
    w.model.value = "nuclei"
    w.device.value = "cpu"
    w.link_time.value = True
    w.run()
    _wait(qtbot, w)
    inst = viewer.layers["movie · nuclei · instances"]
    frac, n = kept_ids(gt, np.asarray(inst.data))
    assert n > 30 and frac >= 0.95
    feats = inst.features
    assert "t" in feats and set(feats["t"]) == {0, 1, 2, 3}
    prov = inst.metadata[META_KEY]["provenance"]
    assert prov["parameters"]["link_time"] == {"min_iou": 0.1}
    w.axes.value = "ZYX"
    assert w.link_time.native.isHidden()


def test_crf_panel_records_its_settings_over_the_segment_provenance(make_napari_viewer, qtbot):
    img, _ = ns.data.synthetic_nuclei((64, 72), seed=3)
    viewer, _, _ = _segmented(make_napari_viewer, qtbot, img, (1.0, 1.0), out_prob=True)
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    w.reset_choices()
    w.prob.value = "cells · nuclei"
    w.n_iter.value = 2
    w.run()
    _wait(qtbot, w)
    prov = viewer.layers["cells · nuclei CRF · semantic"].metadata[META_KEY]["provenance"]
    assert prov["parameters"]["crf"]["n_iter"] == 2
    assert prov["parameters"]["crf"]["foreground"] == [1, 2]
    assert prov["previous"]["model"]["weights_sha256"] == independent_hash(ns.load_model("nuclei"))
    assert prov["napari"]["image_layer"] == "cells"


def test_console_helper_adds_features_and_provenance(make_napari_viewer):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((96, 96), seed=6)
    viewer.add_image(img, name="img", scale=(2, 2))
    res = ns.napari.segment_layer(viewer, "img", "nuclei", device="cpu")
    inst = viewer.layers["img · nuclei · instances"]
    ids = np.unique(res.instances)[1:]
    assert list(inst.features["label"]) == list(ids)
    counts = np.bincount(np.asarray(res.instances).ravel())[ids]
    np.testing.assert_allclose(inst.features["area_um2"], counts * 4.0)
    prov = inst.metadata[META_KEY]["provenance"]
    assert prov["model"]["weights_sha256"] == independent_hash(ns.load_model("nuclei"))
