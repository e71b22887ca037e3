"""OME-Zarr in a real napari viewer: labels opened by napari-ome-zarr, multiscale layers."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import napari_segnet as ns
from napari_segnet._napari import _common

from .test_napari import _wait
from .test_ome_zarr import write_ome_image

pytest.importorskip("napari_ome_zarr")
pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def tiny_model():
    m = ns.build_model("unet", n_classes=3, depth=2, width=4)
    m.meta["target"] = "instances"
    return _common.add_session_model("tiny", m)


def test_napari_ome_zarr_opens_the_labels(make_napari_viewer, tmp_path, tiny_model):
    img, _ = ns.data.synthetic_nuclei((128, 96), seed=2)
    p = write_ome_image(tmp_path / "img.ome.zarr", img, "yx", {"y": 0.5, "x": 0.5})
    model = _common.SESSION_MODELS[tiny_model]
    ns.segment_ome_zarr(p, model, into_input=True, block_size=64)
    viewer = make_napari_viewer()
    layers = viewer.open(str(p), plugin="napari-ome-zarr")
    kinds = sorted(type(lay).__name__ for lay in layers)
    assert kinds == ["Image", "Labels", "Labels"]
    lab = next(lay for lay in layers if lay.name.endswith("segnet_instances"))
    assert lab.multiscale and len(lab.data) == 2
    stored = zarr.open_group(str(p), mode="r")["labels/segnet_instances/0"]
    np.testing.assert_array_equal(np.asarray(lab.data[0]), stored)
    np.testing.assert_allclose(lab.scale, (0.5, 0.5))  # the image's pixel size


def test_segment_panel_runs_a_multiscale_layer_at_full_resolution(
    make_napari_viewer, qtbot, tmp_path, tiny_model
):
    img, _ = ns.data.synthetic_nuclei((128, 96), seed=2)
    p = write_ome_image(tmp_path / "img.ome.zarr", img, "yx", {"y": 0.5, "x": 0.5})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(p), plugin="napari-ome-zarr")
    assert layer.multiscale
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    w.model.value = tiny_model
    w.run()
    _wait(qtbot, w)
    sem = next(lay for lay in viewer.layers if lay.name.endswith("semantic"))
    expected = ns.segment(img, _common.SESSION_MODELS[tiny_model]).semantic
    np.testing.assert_array_equal(sem.data, expected)
    np.testing.assert_allclose(sem.scale, layer.scale)
