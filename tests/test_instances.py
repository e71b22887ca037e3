"""Instance labels from probabilities: ideal inputs give the labels back; blockwise == in memory."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

import napari_segnet as ns
from napari_segnet.metrics import iou_matrix
from napari_segnet.training.targets import instance_classes


def cells(shape, n, seed=0, fill=0.45):
    """Touching convex cells (Voronoi regions of random points, cut to round-ish blobs)."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    pts = tuple(rng.integers(0, s, n) for s in shape)
    seeds[pts] = np.arange(1, n + 1)
    dist, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    lab = seeds[tuple(idx)]
    spacing = (np.prod(shape) / n) ** (1 / len(shape))
    lab[dist > spacing * fill] = 0
    # Keep one connected piece per id, sequential ids.
    out = np.zeros_like(lab)
    k = 0
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        if sl is None:
            continue
        comp, n_comp = ndi.label(lab[sl] == i)
        if n_comp == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = comp == (np.argmax(sizes) + 1)
        # Well-formed objects only: a sizeable interior in one piece (no slivers or
        # necks, which no boundary-based labelling can tell apart from two objects).
        interior = instance_classes(keep.astype(np.int32)) == 1
        if keep.sum() < 30 or ndi.label(interior)[1] != 1 or interior.sum() < 10:
            continue
        k += 1
        out[sl][keep] = k
    return out


def ideal(labels, ndim=None):
    """One-hot background/interior/boundary maps (per 2D slice with ``ndim=2``)."""
    if ndim == 2 and labels.ndim == 3:
        return np.stack([ideal(s) for s in labels], axis=1)
    cls = instance_classes(labels)
    return np.stack([(cls == c).astype(np.float32) for c in range(3)])


def same_partition(a, b) -> bool:
    """Equal up to a renumbering of ids (0 stays background)."""
    if ((a == 0) != (b == 0)).any():
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def nearly_same_partition(a, b, max_pixels: int = 10) -> bool:
    """Same foreground and objects; at most a few pixels that the watershed found tied
    between two objects (its tie-breaking follows the flooding order, which depends on
    the whole array) may go to the other one."""
    if ((a == 0) != (b == 0)).any() or a.max() != b.max():
        return False
    iou = iou_matrix(a, b)
    match = iou.argmax(1) + 1
    mapped = np.concatenate([[0], match])[a]
    return bool(ns.average_precision(a, b, 0.9) == 1.0 and (mapped != b).sum() <= max_pixels)


@pytest.mark.parametrize("shape,n", [((200, 240), 60), ((40, 64, 64), 40)])
def test_ideal_probabilities_give_the_labels_back(shape, n):
    lab = cells(shape, n)
    touching = (instance_classes(lab) == 2) & (
        ndi.maximum_filter(lab, 3) != ndi.minimum_filter(np.where(lab == 0, lab.max() + 1, lab), 3)
    )
    assert touching.any()  # the test really has touching objects
    got = ns.label_instances(ideal(lab))
    assert got.dtype == np.int32
    # Same foreground, same objects; only pixels at the corners where two objects'
    # boundary rings meet are ambiguous in three-class maps, so IoU stays above 0.9.
    np.testing.assert_array_equal(got > 0, lab > 0)
    assert got.max() == lab.max()
    assert ns.average_precision(lab, got, 0.9) == 1.0


def test_tiny_objects_without_interior_are_kept():
    lab = np.zeros((40, 40), np.int32)
    lab[5:7, 5:7] = 1  # 4 px: all boundary
    lab[20:30, 20:30] = 2
    lab[10, 30] = 3  # a single pixel
    got = ns.label_instances(ideal(lab), min_size=1)
    assert same_partition(got, lab)
    # The default size filter (8 px in 2D) removes the tiniest.
    got = ns.label_instances(ideal(lab))
    assert got.max() == 1


def test_stack_of_slices_keeps_ids_distinct():
    lab = np.stack([cells((80, 90), 15, seed=s) for s in range(3)])
    got = ns.label_instances(ideal(lab, ndim=2), ndim=2)
    for z in range(3):
        assert ns.average_precision(lab[z], got[z], 0.9) == 1.0
    ids = [set(np.unique(got[z])) - {0} for z in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    assert max(max(s) for s in ids) == sum(len(s) for s in ids)


def test_components_mode_and_split():
    yy, xx = np.mgrid[:40, :60]
    two = ((yy - 20) ** 2 + (xx - 20) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 37) ** 2 < 100)
    prob = np.stack([~two, two]).astype(np.float32)
    assert ns.label_instances(prob).max() == 1
    split = ns.label_instances(prob, split_touching=True, min_distance=5)
    assert split.max() == 2
    # Multi-class: components per class, ids continue across classes.
    three = np.zeros((3, 20, 20), np.float32)
    three[0] = 1
    three[:, 2:6, 2:6] = [[[0]], [[1]], [[0]]]
    three[:, 10:15, 10:15] = [[[0]], [[0]], [[1]]]
    got = ns.label_instances(three)
    assert set(np.unique(got)) == {0, 1, 2}


def smooth(prob):
    """Real-valued maps like a network's (no flat plateaus where ties could go either way)."""
    p = np.stack([ndi.gaussian_filter(c, 1.0) for c in prob])
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def test_blockwise_equals_in_memory(tmp_path):
    import zarr

    lab = cells((700, 650), 400, seed=3)
    prob = smooth(ideal(lab))
    mem = ns.label_instances(prob)
    calls = []
    blk = ns.label_instances_blockwise(
        prob, block_size=128, halo=72, progress=lambda d, n: calls.append(d)
    )
    assert nearly_same_partition(blk, mem)
    assert calls[-1] == 36 and blk.max() == mem.max()
    z = zarr.open_array(
        str(tmp_path / "p.zarr"), mode="w", shape=prob.shape, chunks=(3, 128, 128), dtype="f4"
    )
    z[...] = prob
    out = zarr.open_array(
        str(tmp_path / "l.zarr"), mode="w", shape=lab.shape, chunks=(128, 128), dtype="i4"
    )
    ns.label_instances_blockwise(z, out=out, block_size=(200, 100), halo=72)
    assert nearly_same_partition(out[...], mem)


def test_blockwise_3d_and_stacks():
    lab = cells((48, 80, 80), 60, seed=4)
    prob = smooth(ideal(lab))
    assert nearly_same_partition(
        ns.label_instances_blockwise(prob, block_size=32, halo=32), ns.label_instances(prob)
    )
    stack = np.stack([cells((90, 90), 20, seed=s) for s in range(2)])
    p2 = np.stack([smooth(ideal(s)) for s in stack], axis=1)
    assert nearly_same_partition(
        ns.label_instances_blockwise(p2, ndim=2, block_size=40, halo=40),
        ns.label_instances(p2, ndim=2),
    )


@pytest.mark.parametrize(
    "prob,kw,match",
    [
        (np.zeros((3, 5)), {}, "probabilities must be"),
        (np.zeros((1, 5, 5)), {}, "at least two"),
        (np.zeros((2, 5, 5)), {"mode": "boundary"}, "background/interior/boundary"),
        (np.zeros((3, 5, 5)), {"mode": "watershed"}, "mode must be"),
        (np.full((3, 5, 5), np.nan), {}, "NaN"),
    ],
)
def test_errors(prob, kw, match):
    with pytest.raises(ns.SegNetError, match=match):
        ns.label_instances(prob, **kw)
