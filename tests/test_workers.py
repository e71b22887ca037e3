"""Patch sampling in worker processes (training on a GPU)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

import napari_segnet as ns
from napari_segnet.errors import SegNetError
from napari_segnet.training.augment import Augmentation
from napari_segnet.training.data import Pair, PatchSampler
from napari_segnet.training.targets import make_target
from napari_segnet.training.workers import WorkerSampler


def _sampler(seed: int = 0) -> PatchSampler:
    img, lab = ns.data.synthetic_nuclei((96, 96), seed=seed, diameter=14)
    tgt, w = make_target(lab, "instances")
    pair = Pair(img[None].astype(np.float32), tgt, w, lab)
    return PatchSampler([pair], (48, 48), Augmentation.none(), np.random.default_rng(seed), False)


def test_workers_give_patches_of_the_image_with_their_targets():
    inner = _sampler()
    pair = inner.pairs[0]
    sampler = WorkerSampler(inner, 2)
    try:
        sampler.start(4)
        assert len(mp.active_children()) >= 2
        for _ in range(3):
            x, y, w = sampler.batch(4)
            assert x.shape == (4, 1, 48, 48) and y.shape == (4, 48, 48) and w.shape == y.shape
            # No augmentation: each patch is a crop of the image, with its own target
            # and weights at the same place (found by searching the image).
            for xi, yi, wi in zip(x, y, w):
                hits = [
                    (r, c)
                    for r in range(96 - 48 + 1)
                    for c in range(96 - 48 + 1)
                    if np.array_equal(pair.image[0, r : r + 48, c : c + 48], xi[0])
                ]
                assert hits, "a patch that is not a crop of the image"
                r, c = hits[0]
                np.testing.assert_array_equal(yi, pair.target[r : r + 48, c : c + 48])
                np.testing.assert_array_equal(wi, pair.weight[r : r + 48, c : c + 48])
    finally:
        sampler.close()
    assert not [p for p in sampler.procs if p.is_alive()]


class _Broken(PatchSampler):
    def batch(self, n):
        raise ValueError("no patches here")


def test_a_failing_worker_is_reported():
    inner = _sampler()
    broken = _Broken(inner.pairs, (48, 48), Augmentation.none(), np.random.default_rng(0), False)
    sampler = WorkerSampler(broken, 1)
    with pytest.raises(SegNetError, match="no patches here"):
        sampler.batch(2)
    assert not sampler.procs


def test_training_with_workers():
    img, lab = ns.data.synthetic_nuclei((96, 96), seed=3, diameter=14)
    before = mp.active_children()
    model = ns.train(
        img,
        lab,
        epochs=2,
        steps_per_epoch=3,
        device="cpu",
        model_options={"depth": 2, "width": 4},
        patch_size=64,
        validation=0,
        workers=2,
        pretrained=None,
    )
    assert model.meta["training"]["workers"] == 2
    assert model.meta["training"]["steps"] == 6
    # The processes are gone when train returns.
    assert len(mp.active_children()) <= len(before)
    with pytest.raises(SegNetError, match="workers"):
        ns.train(img, lab, epochs=1, workers=-1)
