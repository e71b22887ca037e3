"""Time-lapse ids: link_over_time and segment(link_time=True) on moving synthetic nuclei."""

from __future__ import annotations

import numpy as np
import pytest

import napari_segnet as ns


def _matched(gt: np.ndarray, pred: np.ndarray, min_iou: float = 0.5) -> dict[int, int]:
    """Ground-truth id -> the predicted id that covers it with IoU >= min_iou."""
    out = {}
    for i in np.unique(gt)[1:]:
        mask = gt == i
        ids, counts = np.unique(pred[mask], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if len(ids):
            j = ids[np.argmax(counts)]
            if counts.max() / np.logical_or(mask, pred == j).sum() >= min_iou:
                out[int(i)] = int(j)
    return out


def kept_ids(gt: np.ndarray, pred: np.ndarray) -> tuple[float, int]:
    """Fraction of objects found in two consecutive frames that kept their id, and how many."""
    kept = total = 0
    prev = _matched(gt[0], pred[0])
    for t in range(1, len(gt)):
        cur = _matched(gt[t], pred[t])
        for i in set(prev) & set(cur):
            total += 1
            kept += prev[i] == cur[i]
        prev = cur
    return kept / max(total, 1), total


def _shuffle(labels: np.ndarray, seed: int = 1) -> np.ndarray:
    """Each frame's ids replaced by a random permutation (as frame-by-frame labelling gives)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(labels)
    for t in range(len(labels)):
        perm = rng.permutation(int(labels.max()) + 1)
        perm[perm == 0] = perm[0]
        perm[0] = 0
        out[t] = perm[labels[t]]
    return out


def test_small_example():
    a = np.zeros((3, 10, 10), np.int32)
    a[0, 1:4, 1:4], a[0, 6:9, 6:9] = 5, 7
    a[1, 2:5, 1:4], a[1, 6:9, 5:8] = 9, 2  # both moved one pixel
    a[2, 2:5, 2:5], a[2, 0:2, 7:9] = 3, 4  # the first moved again; a new one; one gone
    before = a.copy()
    out = ns.link_over_time(a)
    np.testing.assert_array_equal(a, before)
    assert out.dtype == np.int32
    assert set(np.unique(out[0])) == {0, 1, 2}
    assert (out[1][a[1] == 9] == 1).all() and (out[1][a[1] == 2] == 2).all()
    assert (out[2][a[2] == 3] == 1).all() and (out[2][a[2] == 4] == 3).all()
    assert ((out > 0) == (a > 0)).all()


def test_one_to_one_and_min_iou():
    a = np.zeros((2, 12, 12), np.int32)
    a[0, 2:10, 2:10] = 1
    a[1, 2:10, 2:6], a[1, 2:10, 6:10] = 1, 2  # a split: one half keeps the id
    out = ns.link_over_time(a)
    assert sorted(np.unique(out[1])[1:]) == [1, 2]
    b = np.zeros((2, 12, 12), np.int32)
    b[0, 0:4, 0:4], b[1, 3:7, 3:7] = 1, 1  # IoU 1/31
    assert ns.link_over_time(b, min_iou=0.02)[1].max() == 1
    assert ns.link_over_time(b, min_iou=0.5)[1].max() == 2


def test_relinks_shuffled_ground_truth_of_moving_nuclei():
    _, gt = ns.data.synthetic_timelapse(6, (192, 192), seed=3, step=3.0)
    assert kept_ids(gt, gt) == (1.0, kept_ids(gt, gt)[1])
    shuffled = _shuffle(gt)
    assert kept_ids(gt, shuffled)[0] < 0.2
    frac, n = kept_ids(gt, ns.link_over_time(shuffled))
    assert n > 100
    assert frac >= 0.95


def test_time_axis_elsewhere_and_3d_frames():
    _, gt = ns.data.synthetic_timelapse(3, (64, 64), seed=0, step=2.0)
    shuffled = _shuffle(gt)
    moved = np.moveaxis(shuffled, 0, 2)  # (Y, X, T)
    np.testing.assert_array_equal(
        np.moveaxis(ns.link_over_time(moved, axis=2), 2, 0), ns.link_over_time(shuffled)
    )
    vol = np.repeat(shuffled[:, None], 2, axis=1)  # (T, Z, Y, X)
    np.testing.assert_array_equal(ns.link_over_time(vol)[:, 0], ns.link_over_time(shuffled))


def test_segment_keeps_ids_over_time():
    images, gt = ns.data.synthetic_timelapse(4, (160, 160), seed=2, step=3.0)
    model = ns.load_model("nuclei")
    res = ns.segment(images, model, axes="TYX", device="cpu", diameter=None, link_time=True)
    assert res.provenance["parameters"]["link_time"] == {"min_iou": 0.1}
    frac, n = kept_ids(gt, np.asarray(res.instances))
    assert n > 50
    assert frac >= 0.95


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": np.zeros((4, 4), np.int32)}, "time axis"),
        ({"labels": np.zeros((2, 4, 4), np.float32)}, "integer"),
        ({"min_iou": 0}, "min_iou"),
        ({"min_iou": 1.5}, "min_iou"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"labels": np.zeros((2, 4, 4), np.int32), **kwargs}
    with pytest.raises(ns.SegNetError, match=message):
        ns.link_over_time(**kwargs)


def test_segment_link_time_needs_t(small_unet):
    with pytest.raises(ns.SegNetError, match="T axis"):
        ns.segment(np.zeros((32, 32), np.float32), small_unet, link_time=True, instances=True)
    with pytest.raises(ns.SegNetError, match="link_time"):
        ns.segment(np.zeros((32, 32), np.float32), small_unet, link_time="yes")
