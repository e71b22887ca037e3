"""Synthetic nuclei: deterministic, exact labels, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

import napari_segnet as ns


def test_deterministic_and_consistent():
    a, la = ns.data.synthetic_nuclei((128, 160), seed=3)
    b, lb = ns.data.synthetic_nuclei((128, 160), seed=3)
    c, _ = ns.data.synthetic_nuclei((128, 160), seed=4)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert a.shape == la.shape == (128, 160)
    assert a.dtype == np.uint16 and la.dtype == np.int32
    ids = np.unique(la)
    np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))  # sequential ids
    # Nuclei are brighter than background.
    assert a[la > 0].mean() > 2 * a[la == 0].mean()


def test_sizes_follow_diameter():
    _, lab = ns.data.synthetic_nuclei((256, 256), seed=0, diameter=20, irregular=0.0)
    d = np.median([p.equivalent_diameter_area for p in regionprops(lab) if p.area > 50])
    assert 14 < d < 24


def test_3d_and_8bit():
    img, lab = ns.data.synthetic_nuclei((16, 64, 64), seed=0, anisotropy=2.0, bit_depth=8)
    assert img.dtype == np.uint8 and img.shape == lab.shape == (16, 64, 64)
    assert lab.max() > 3


def test_bad_shape():
    with pytest.raises(ValueError):
        ns.data.synthetic_nuclei((4,), seed=0)
