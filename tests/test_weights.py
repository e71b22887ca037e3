"""The UNet boundary weight map against a brute-force reading of its definition."""

from __future__ import annotations

import numpy as np
import pytest

import napari_segnet as ns


def brute_force(labels, w0=10.0, sigma=5.0, class_balance=True, spacing=(1.0, 1.0)):
    """Straight from the formula: distances by enumerating every object pixel."""
    sp = np.asarray(spacing, float)
    coords = np.indices(labels.shape).reshape(labels.ndim, -1).T * sp
    flat = labels.ravel()
    ids = [i for i in np.unique(flat) if i]
    fg = flat > 0
    wc = np.ones(flat.shape)
    if class_balance and fg.any() and (~fg).any():
        n_fg, n_bg = fg.sum(), (~fg).sum()
        if n_bg >= n_fg:
            wc[fg] = n_bg / n_fg
        else:
            wc[~fg] = n_fg / n_bg
    w = wc.copy()
    if len(ids) >= 2:
        per_obj = []
        for i in ids:
            pts = coords[flat == i]
            d = np.sqrt(((coords[:, None, :] - pts[None]) ** 2).sum(-1)).min(1)
            per_obj.append(d)
        per_obj = np.sort(np.stack(per_obj), axis=0)
        d1, d2 = per_obj[0], per_obj[1]
        bg = ~fg
        w[bg] += w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))[bg]
    return w.reshape(labels.shape)


def _touching_labels(shape=(40, 48), seed=0):
    _, lab = ns.data.synthetic_nuclei(shape, seed=seed, diameter=10, touching=0.8)
    return lab


@pytest.mark.parametrize("class_balance", [True, False])
@pytest.mark.parametrize("w0,sigma", [(10.0, 5.0), (5.0, 2.0), (20.0, 8.0)])
def test_matches_formula_2d(class_balance, w0, sigma):
    lab = _touching_labels()
    got = ns.boundary_weight_map(lab, w0=w0, sigma=sigma, class_balance=class_balance)
    ref = brute_force(lab, w0, sigma, class_balance)
    assert got.dtype == np.float32 and got.shape == lab.shape
    np.testing.assert_allclose(got, ref, atol=0.01)


def test_matches_formula_3d_anisotropic():
    _, lab = ns.data.synthetic_nuclei((10, 24, 24), seed=1, diameter=8, anisotropy=2.0)
    got = ns.boundary_weight_map(lab, spacing=(2.0, 1.0, 1.0))
    np.testing.assert_allclose(got, brute_force(lab, spacing=(2.0, 1.0, 1.0)), atol=0.01)


def test_thin_gap_between_touching_objects_gets_the_weight():
    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 3:14] = 1
    lab[5:15, 15:27] = 2  # a one-pixel gap at column 14
    w = ns.boundary_weight_map(lab, w0=10, sigma=5, class_balance=False)
    # d1 = d2 = 1 in the gap: 1 + 10·exp(-4/50)
    np.testing.assert_allclose(w[10, 14], 1 + 10 * np.exp(-4 / 50), atol=1e-5)
    assert w[10, 14] > w[10, 1] > 1.0
    assert (w[lab > 0] == 1).all()  # border term only on background


def test_fewer_than_two_objects_and_empty():
    lab = np.zeros((16, 16), np.int32)
    np.testing.assert_array_equal(ns.boundary_weight_map(lab), 1.0)
    lab[4:8, 4:8] = 3
    w = ns.boundary_weight_map(lab, class_balance=True)
    np.testing.assert_allclose(w[lab > 0], (lab == 0).sum() / (lab > 0).sum())
    np.testing.assert_array_equal(w[lab == 0], 1.0)


def test_input_untouched_and_errors():
    lab = _touching_labels()
    before = lab.copy()
    ns.boundary_weight_map(lab)
    np.testing.assert_array_equal(lab, before)
    with pytest.raises(ns.SegNetError):
        ns.boundary_weight_map(np.zeros((3, 3, 3, 3), np.int32))
    with pytest.raises(ns.SegNetError):
        ns.boundary_weight_map(np.full((5, 5), 0.5))
    with pytest.raises(ns.SegNetError):
        ns.boundary_weight_map(lab, sigma=0)
