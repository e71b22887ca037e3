"""The Segment panel in physical units: the layer's scale as pixel size (run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import downscale_local_mean

import napari_segnet as ns

pytestmark = pytest.mark.gui


def _run(qtbot, w, layer):
    w.image.value = layer
    w.model.value = "nuclei"
    w.physical.value = 12.0
    w.run()
    qtbot.waitUntil(lambda: w.job.worker is not None and not w.busy, timeout=60_000)


def test_pixel_size_from_the_layer_scale_gives_the_same_objects(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    img, _ = ns.data.synthetic_nuclei((256, 256), seed=0, diameter=24, noise=0.3, touching=0.2)
    fine = img.astype(np.float32)
    coarse = downscale_local_mean(fine, (2, 2)).astype(np.float32)
    a = viewer.add_image(fine, name="fine", scale=(0.5, 0.5), translate=(10, 20), units="um")
    b = viewer.add_image(coarse, name="coarse", scale=(1.0, 1.0), translate=(10, 20), units="um")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = a
    assert w.pixel_size.value == "Y 0.5 × X 0.5 µm"
    _run(qtbot, w, a)
    _run(qtbot, w, b)
    fa = viewer.layers["fine · nuclei · instances"]
    fb = viewer.layers["coarse · nuclei · instances"]
    # Each result lies on its image: same scale and translate, same grid.
    for src, out in ((a, fa), (b, fb)):
        np.testing.assert_allclose(out.scale, src.scale)
        np.testing.assert_allclose(out.translate, src.translate)
        assert tuple(out.units) == tuple(src.units)
        assert out.data.shape == src.data.shape
    up = np.repeat(np.repeat(fb.data, 2, 0), 2, 1)
    assert ns.average_precision(fa.data, up, 0.5) >= 0.9
    assert "= 12 µm" in w.status.value
    np.testing.assert_array_equal(a.data, fine)


def test_physical_diameter_without_a_pixel_size_notifies(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    _, w = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    w.image.value = layer
    assert w.pixel_size.value.startswith("not set")
    layer.scale = (2.0, 2.0)  # the line follows the layer
    assert w.pixel_size.value == "Y 2 × X 2 (no unit)"
    layer.scale = (1.0, 1.0)
    w.physical.value = 10.0
    w.run()
    assert errors and "no pixel size" in errors[-1]
    layer.scale = (0.5, 0.5)
    w.diameter.value = 20
    w.run()
    assert "not both" in errors[-1]
    assert [lay.name for lay in viewer.layers] == ["img"]


def test_console_helper_takes_the_layer_scale_as_spacing(make_napari_viewer):
    viewer = make_napari_viewer()
    stack, _ = ns.data.synthetic_nuclei((8, 48, 48), seed=0, anisotropy=3.0)
    layer = viewer.add_image(stack, name="stack", scale=(1.5, 0.5, 0.5), translate=(0, 5, 5))
    res = ns.napari.segment_layer(viewer, "stack", "nuclei", diameter=None)
    assert res.info["spacing"] == {"Z": 1.5, "Y": 0.5, "X": 0.5}
    out = viewer.layers["stack · nuclei · instances"]
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
