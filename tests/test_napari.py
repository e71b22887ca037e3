"""The plugin inside a real napari viewer (needs a display: run under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_dock_manifest_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    assert dock is not None
    text = widget.info.value
    assert "unet" in text and "napari-segnet" in text


def test_open_samples(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segnet", "nuclei")
    names = [layer.name for layer in viewer.layers]
    assert "nuclei" in names and "nuclei ground truth" in names
    labels = viewer.layers["nuclei ground truth"].data
    assert labels.max() > 10 and labels.shape == viewer.layers["nuclei"].data.shape
    viewer.open_sample("napari-segnet", "nuclei_3d")
    layer = viewer.layers["nuclei 3D"]
    assert layer.data.ndim == 3
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
