"""Mask R-CNN: box operations, tiled detection, files, and refused inputs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from safetensors import safe_open

import napari_segnet as ns
from napari_segnet.engine.detect import detect
from napari_segnet.errors import ModelConfigError, SegNetError, SegNetWarning
from napari_segnet.models.detection_ops import (
    box_iou,
    crop_masks,
    decode,
    encode,
    nms,
    paste_mask,
    roi_align,
)
from napari_segnet.training.detection import targets_of


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0)
    # A loose threshold and masks that fill their boxes, so the untrained network
    # returns objects to compare.
    model.config["score_threshold"], model.config["nms_threshold"] = 0.3, 0.5
    with torch.no_grad():
        model.mask_head.body[-1].bias.fill_(3.0)
    return model.eval()


class ThresholdDetector(torch.nn.Module):
    """A stand-in detector whose objects depend only on the pixels around them.

    It reports each connected bright region as an object (its box, its mask, score 0.9),
    so the tiled run must give exactly the single-tile objects when tiles are merged
    right: each object once, whole, from the tile whose core holds its centre.
    """

    divisor = 16
    in_channels = 1
    max_diameter = 40.0
    config: ClassVar[dict] = {"score_threshold": 0.5, "nms_threshold": 0.5}
    meta: ClassVar[dict] = {"normalization": {"kind": "none"}}

    def forward(self, x):
        from scipy import ndimage as ndi

        lab, _ = ndi.label(x[0, 0].numpy() > 0.5)
        t = targets_of(lab)
        masks = crop_masks(t["masks"], t["boxes"], 28)
        return [{"boxes": t["boxes"], "scores": torch.full((len(masks),), 0.9), "masks": masks}]


def test_box_iou_matches_pixel_count():
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 1.0, 5.0, 3.0]])
    b = torch.tensor([[2.0, 2.0, 6.0, 6.0]])
    grid = np.zeros((2, 8, 8), bool), np.zeros((8, 8), bool)
    grid[0][0, :4, :4] = True
    grid[0][1, 1:3, 2:5] = True
    grid[1][2:6, 2:6] = True
    expected = [(m & grid[1]).sum() / (m | grid[1]).sum() for m in grid[0]]
    np.testing.assert_allclose(box_iou(a, b)[:, 0].numpy(), expected, rtol=1e-6)


def test_nms_keeps_what_brute_force_keeps():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 50, (60, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.uniform(5, 15, (60, 2))], 1))
    scores = torch.tensor(rng.uniform(size=60))
    iou = box_iou(boxes, boxes).numpy()
    kept: list[int] = []
    for i in np.argsort(-scores.numpy()):
        if all(iou[i, j] <= 0.5 for j in kept):
            kept.append(int(i))
    assert nms(boxes, scores, 0.5).tolist() == kept


def test_roi_align_samples_a_linear_ramp_at_bin_centres():
    # Bilinear samples of a linear function average to its value at the bin centre.
    h, w = 20, 30
    ramp = torch.arange(w, dtype=torch.float32).repeat(h, 1) + 0.5  # value = x of the centre
    out = roi_align(ramp[None, None], [torch.tensor([[4.0, 3.0, 16.0, 15.0]])], 4, 1.0)
    expected = 4.0 + (np.arange(4) + 0.5) * 3.0
    np.testing.assert_allclose(out[0, 0].numpy(), np.tile(expected, (4, 1)), atol=1e-4)


def test_paste_mask_fills_its_box():
    region, prob = paste_mask(torch.ones(28, 28), np.array([2.0, 3.0, 7.0, 9.0]), 12, 12)
    assert region == (slice(3, 9), slice(2, 7))
    assert prob.shape == (6, 5) and (prob > 0.5).all()


def test_targets_come_from_the_labels():
    lab = np.zeros((10, 12), np.int32)
    lab[1:4, 2:6] = 3
    lab[5:9, 7:11] = 8
    t = targets_of(lab)
    assert t["boxes"].tolist() == [[2, 1, 6, 4], [7, 5, 11, 9]]
    assert [int(m.sum()) for m in t["masks"]] == [12, 16]


def test_a_training_step_lowers_the_loss_on_its_batch():
    torch.manual_seed(0)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0).train()
    image, lab = ns.data.synthetic_nuclei((64, 64), seed=2, diameter=12)
    x = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.sampling_generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(6):
        model.sampling_generator.manual_seed(0)
        loss = model(x, [targets_of(lab)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_box_coding_round_trip_and_mask_targets_align_with_roi_align():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (40, 2))
    gt = torch.tensor(
        np.concatenate([xy, xy + rng.uniform(3, 20, (40, 2))], 1), dtype=torch.float32
    )
    xy = rng.uniform(0, 50, (40, 2))
    ref = torch.tensor(
        np.concatenate([xy, xy + rng.uniform(3, 20, (40, 2))], 1), dtype=torch.float32
    )
    weights = (10.0, 10.0, 5.0, 5.0)
    torch.testing.assert_close(decode(encode(gt, ref, weights), ref, weights), gt)
    # The mask target of a box is what RoIAlign samples of the mask on that box.
    mask = torch.zeros(1, 40, 40)
    mask[0, 10:22, 5:20] = 1
    box = torch.tensor([[5.0, 10.0, 20.0, 22.0]])
    crop = crop_masks(mask, box, 28)
    torch.testing.assert_close(crop, roi_align(mask[None], [box], 28, 1.0)[:, 0])
    assert bool((crop >= 0.5).all())


@pytest.fixture(scope="module")
def trained():
    """A Mask R-CNN trained step by step (no clock): 300 steps of 4 patches of 96 x 96."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic on every machine
    pairs = [ns.data.synthetic_nuclei((96, 96), seed=i, diameter=12) for i in range(8)]
    try:
        return ns.train(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            model="maskrcnn",
            epochs=1,
            steps_per_epoch=300,
            patch_size=96,
            batch_size=4,
            validation=0,
            device="cpu",
        )
    finally:
        torch.set_num_threads(threads)


def test_short_training_detects_held_out_nuclei(trained):
    held_out = [ns.data.synthetic_nuclei((96, 96), seed=100 + i, diameter=12) for i in range(4)]
    aps = [
        ns.average_precision(lab, ns.segment(im, trained, device="cpu").instances, 0.5)
        for im, lab in held_out
    ]
    assert np.mean(aps) >= 0.7, aps


def test_trained_network_tiled_gives_the_single_tile_objects(trained):
    # The merging itself is exact (test_tiled_equals_single_tile); a trained network
    # also sees other context near tile edges, so borderline detections may differ.
    image, _ = ns.data.synthetic_nuclei((192, 192), seed=7, diameter=12)
    whole = detect(image, trained, tile_size=512, device="cpu")
    tiled = detect(image, trained, tile_size=48, overlap=48, device="cpu")
    assert whole.info["n_tiles"] == 1 and tiled.info["n_tiles"] == 16
    best = ns.metrics.iou_matrix(whole.labels, tiled.labels).max(axis=1)
    confident = whole.scores >= 0.9
    assert len(whole.scores) > 40 and confident.mean() > 0.8
    assert (best[confident] >= 0.95).mean() >= 0.95
    assert (best >= 0.5).mean() >= 0.9


def test_a_patch_without_objects_trains_as_background():
    # Random patches of sparse images often hold no object at all.
    empty = targets_of(np.zeros((64, 64), np.int32))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 64, 64)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0).train()
    _, lab = ns.data.synthetic_nuclei((64, 64), seed=1, diameter=12)
    loss = model(torch.randn(2, 1, 64, 64), [empty, targets_of(lab)])
    loss.backward()
    assert torch.isfinite(loss)


def test_tiled_equals_single_tile():
    _, lab = ns.data.synthetic_nuclei((200, 200), seed=3, diameter=14, touching=0.0)
    image = (lab > 0).astype(np.float32)
    model = ThresholdDetector()
    whole = detect(image, model, tile_size=512)
    tiled = detect(image, model, tile_size=48, overlap=32)
    assert whole.info["n_tiles"] == 1 and tiled.info["n_tiles"] == 25
    assert len(whole.scores) > 20
    iou = ns.metrics.iou_matrix(whole.labels, tiled.labels)
    assert iou.shape[0] == iou.shape[1] == len(whole.scores)
    assert (iou.max(axis=1) >= 0.95).all()


def test_segment_returns_instances_scores_and_boxes(net):
    image, _ = ns.data.synthetic_nuclei((96, 96), seed=4, diameter=12)
    res = ns.segment(image, net)
    found = detect(image, net)
    np.testing.assert_array_equal(res.instances, found.labels)
    assert res.probabilities.shape == (2, 96, 96)
    assert len(res.objects["score"]) == res.instances.max()
    for i in range(1, int(res.instances.max()) + 1):
        ys, xs = np.nonzero(res.instances == i)
        y0, x0, y1, x1 = (res.objects[k][i - 1] for k in ("y0", "x0", "y1", "x1"))
        assert y0 - 1 <= ys.min() and ys.max() < y1 + 1 and x0 - 1 <= xs.min() and xs.max() < x1 + 1


def test_save_load_round_trip_is_identical_and_unpickled(net, tmp_path):
    image, _ = ns.data.synthetic_nuclei((96, 96), seed=5, diameter=12)
    path = ns.save_model(net, tmp_path / "det.segnet")
    with safe_open(str(path), framework="pt") as f:
        assert "napari_segnet" in f.metadata()
    loaded = ns.load_model(path)
    a, b = detect(image, net), detect(image, loaded)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_refuses_3d_models_and_volumes(net):
    with pytest.raises(ModelConfigError, match="2D detector"):
        ns.build_model("maskrcnn", dims=3)
    with pytest.raises(SegNetError, match="2D images"):
        ns.segment(np.zeros((4, 64, 64), np.float32), net)


def test_refuses_labels_without_objects():
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    with pytest.raises(SegNetError, match="no objects"):
        ns.train([image, image], [np.zeros((64, 64), np.int32)] * 2, model="maskrcnn")


def test_refuses_pixel_loss_options_for_maskrcnn():
    image, lab = ns.data.synthetic_nuclei((64, 64), seed=0)
    with pytest.raises(SegNetError, match="w0"):
        ns.train(image, lab, model="maskrcnn", w0=3.0)


def test_warns_when_objects_exceed_the_overlap(net):
    image, _ = ns.data.synthetic_nuclei((128, 128), seed=6, diameter=12)
    with pytest.warns(SegNetWarning, match="larger than the tile overlap"):
        detect(image, net, tile_size=32, overlap=0, score_threshold=0.0)
