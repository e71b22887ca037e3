"""Mask R-CNN: box operations, tiled detection, files, and refused inputs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import tifffile
import torch
from safetensors import safe_open
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper

import napari_segnet as ns
from napari_segnet.engine.detect import detect, paste_mask
from napari_segnet.errors import ModelConfigError, SegNetError, SegNetWarning
from napari_segnet.models.maskrcnn import CONTEXT_RADIUS, canonical_scale
from napari_segnet.training.detection import targets_of


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0)
    # A loose threshold and masks that fill their boxes, so the untrained network
    # returns objects to compare.
    model.config["score_threshold"], model.config["nms_threshold"] = 0.3, 0.5
    with torch.no_grad():
        model.detector.roi_heads.mask_predictor.mask_fcn_logits.bias.fill_(3.0)
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
        rois = torch.cat([torch.arange(len(t["boxes"]))[:, None].float(), t["boxes"]], 1)
        masks = roi_align(t["masks"][:, None].float(), rois, (28, 28), 1.0)[:, 0]
        return [{"boxes": t["boxes"], "scores": torch.full((len(masks),), 0.9), "masks": masks}]


def test_paste_mask_fills_its_box():
    # Edges of pixels 2..6 (x) and 3..8 (y); pixel i's centre is at i.
    region, prob = paste_mask(torch.ones(28, 28), np.array([1.5, 2.5, 6.5, 8.5]), 12, 12)
    assert region == (slice(3, 9), slice(2, 7))
    assert prob.shape == (6, 5) and (prob > 0.5).all()


def test_the_detector_is_torchvisions_with_anchors_and_levels_from_the_diameter():
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0)
    assert isinstance(model.detector, TorchvisionMaskRCNN)
    assert model.detector.rpn.anchor_generator.sizes == ((12,), (24,), (48,))
    # torchvision's level rule with our scale: boxes of two diameters pool from the
    # stride-4 map (level 2), of four from stride 8, of eight from stride 16.
    mapper = LevelMapper(2, 4, canonical_scale=canonical_scale(12.0), canonical_level=4)
    boxes = torch.tensor([[0.0, 0.0, s, s] for s in (12.0, 24.0, 48.0, 96.0)])
    assert (mapper([boxes]) + 2).tolist() == [2, 2, 3, 4]


def test_targets_come_from_the_labels():
    lab = np.zeros((10, 12), np.int32)
    lab[1:4, 2:6] = 3
    lab[5:9, 7:11] = 8
    t = targets_of(lab)
    assert t["boxes"].tolist() == [[1.5, 0.5, 5.5, 3.5], [6.5, 4.5, 10.5, 8.5]]
    assert [int(m.sum()) for m in t["masks"]] == [12, 16]


def test_a_training_step_lowers_the_loss_on_its_batch():
    torch.manual_seed(0)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0).train()
    image, lab = ns.data.synthetic_nuclei((64, 64), seed=2, diameter=12)
    x = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))[None, None]
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(6):
        torch.manual_seed(0)  # the same sampled anchors and boxes every step
        loss = model(x, [targets_of(lab)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


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
    # With the default overlap (the receptive radius here) every tile sees all the
    # context its kept objects' features depend on: the same objects, object by object.
    image, _ = ns.data.synthetic_nuclei((400, 400), seed=7, diameter=12)
    whole = detect(image, trained, tile_size=512, device="cpu")
    tiled = detect(image, trained, tile_size=128, device="cpu")
    assert whole.info["n_tiles"] == 1 and tiled.info["n_tiles"] == 16
    assert tiled.info["overlap"] >= CONTEXT_RADIUS
    assert len(whole.scores) > 200 and len(tiled.scores) == len(whole.scores)
    iou = ns.metrics.iou_matrix(whole.labels, tiled.labels)
    assert (iou.max(axis=1) >= 0.95).all() and (iou.max(axis=0) >= 0.95).all()


def test_context_radius_covers_the_receptive_field():
    # The input pixels with a gradient on one coarsest-level RPN output.
    torch.manual_seed(0)
    model = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0).eval()
    x = torch.randn(1, 1, 384, 384, requires_grad=True)
    feats = model.detector.backbone(x)
    objectness, deltas = model.detector.rpn.head([feats["2"]])
    cell = objectness[0].shape[-1] // 2
    out = objectness[0][0, :, cell, cell].sum() + deltas[0][0, :, cell, cell].sum()
    (grad,) = torch.autograd.grad(out, x)
    rows = torch.nonzero(grad[0, 0].abs().sum(dim=1) > 0).flatten()
    centre = cell * 16
    reach = max(centre - int(rows.min()), int(rows.max()) - centre)
    assert reach <= CONTEXT_RADIUS
    assert model.tile_overlap >= CONTEXT_RADIUS


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


def test_three_channel_images_detect_like_their_grey_copy():
    # An RGB image whose channels are equal, through a 3-channel network whose first
    # convolution sees the sum of its channels: the grey network's answer.
    torch.manual_seed(0)
    grey = ns.build_model("maskrcnn", width=4, fpn_width=8, diameter=12.0)
    grey.config["score_threshold"], grey.config["nms_threshold"] = 0.3, 0.5
    rgb = ns.build_model("maskrcnn", in_channels=3, width=4, fpn_width=8, diameter=12.0)
    rgb.config.update(grey.config, in_channels=3)
    state = grey.state_dict()
    first = "detector.backbone.body.stem.0.0.weight"
    state[first] = state[first].repeat(1, 3, 1, 1) / 3
    rgb.load_state_dict(state)
    rgb.meta["normalization"] = grey.meta["normalization"] = {"kind": "none"}
    image, _ = ns.data.synthetic_nuclei((96, 96), seed=4, diameter=12)
    a = detect(image, grey.eval())
    b = detect(np.repeat(image[..., None], 3, axis=-1), rgb.eval(), axes="YXC")
    assert len(a.scores) > 0 and len(b.scores) == len(a.scores)
    assert (ns.metrics.iou_matrix(a.labels, b.labels).max(axis=1) >= 0.95).all()
    np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-3)


def test_cli_segments_with_a_maskrcnn_file_and_its_score_threshold(net, tmp_path, capsys):
    from napari_segnet.cli import main

    image, _ = ns.data.synthetic_nuclei((96, 96), seed=4, diameter=12)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    model = ns.save_model(net, tmp_path / "det.segnet")
    counts = []
    for threshold in ("0.3", "0.9"):
        out = tmp_path / f"out{threshold}"
        args = ["segment", str(tmp_path / "cells.tif"), "--model", str(model), "--out", str(out)]
        assert main([*args, "--score-threshold", threshold, "--quiet"]) == 0
        got = tifffile.imread(out / "cells_instances.tif")
        expected = detect(image, net, score_threshold=float(threshold)).labels
        np.testing.assert_array_equal(got, expected)
        counts.append(int(got.max()))
    assert counts[0] > counts[1]
    capsys.readouterr()
    unet = ["segment", str(tmp_path / "cells.tif"), "--out", str(tmp_path / "u")]
    rc = main([*unet, "--score-threshold", "0.5"])
    assert rc == 2 and "Mask R-CNN" in capsys.readouterr().err


def test_cli_trains_a_maskrcnn(tmp_path):
    from napari_segnet.cli import main

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for i in range(2):
        image, lab = ns.data.synthetic_nuclei((64, 64), seed=i, diameter=12)
        tifffile.imwrite(tmp_path / "images" / f"{i}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"{i}.tif", lab)
    out = tmp_path / "det.segnet"
    args = ["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels")]
    args += ["--arch", "maskrcnn", "--epochs", "1", "--steps-per-epoch", "2", "--patch-size"]
    args += ["64", "--batch-size", "1", "--validation", "0", "--out", str(out), "--quiet"]
    assert main(args) == 0
    model = ns.load_model(out)
    assert model.arch == "maskrcnn" and model.meta["training"]["steps"] == 2


def test_ome_zarr_jobs_refuse_maskrcnn_models(net, tmp_path):
    from napari_segnet.segment_ome import segment_ome_zarr

    with pytest.raises(SegNetError, match="not run block by block"):
        segment_ome_zarr(tmp_path / "missing.ome.zarr", net, tmp_path / "out.ome.zarr")


def test_diameter_zooms_the_image_to_the_trained_object_size(trained):
    # Nuclei twice the trained size: diameter= (or a physical one with a spacing)
    # shrinks the image for the detector, and the labels come back at full size.
    from scipy import ndimage as ndi

    image, lab = ns.data.synthetic_nuclei((96, 96), seed=101, diameter=12)
    big, big_lab = ndi.zoom(image, 2, order=1), ndi.zoom(lab, 2, order=0)
    trained_d = trained.metadata.diameter
    native = ns.average_precision(lab, ns.segment(image, trained, device="cpu").instances, 0.5)
    res = ns.segment(big, trained, diameter=2 * trained_d, device="cpu")
    assert res.instances.shape == big.shape and res.info["rescale"] == pytest.approx(0.5)
    assert ns.average_precision(big_lab, res.instances, 0.5) >= native - 0.1
    assert len(res.objects["score"]) == len(np.unique(res.instances)) - 1
    ys, xs = np.nonzero(res.instances == res.objects["label"][0])
    assert res.objects["y1"][0] >= ys.max() - 2 and res.objects["x1"][0] >= xs.max() - 2
    phys = ns.segment(
        big, trained, spacing=0.5, physical_diameter=trained_d, device="cpu"
    )  # 2 * trained_d pixels of 0.5 units
    np.testing.assert_array_equal(phys.instances, res.instances)
    # The default "auto" estimates the size by detecting in a central crop.
    auto = ns.segment(big, trained, device="cpu")
    assert auto.info["diameter_estimated"] and 0.4 <= auto.info["rescale"] <= 0.6
    assert ns.average_precision(big_lab, auto.instances, 0.5) >= native - 0.1
    as_is = ns.segment(image, trained, device="cpu")
    assert as_is.info["rescale"] == 1.0  # objects of the trained size: no zoom


def test_refuses_crf_and_time_linking_for_maskrcnn(net):
    image, _ = ns.data.synthetic_nuclei((64, 64), seed=0)
    with pytest.raises(SegNetError, match="crf"):
        ns.segment(image, net, crf=True)
    with pytest.raises(SegNetError, match="link_time"):
        ns.segment(image, net, link_time=True)


def test_train_takes_the_architecture_as_arch():
    image, lab = ns.data.synthetic_nuclei((64, 64), seed=0, diameter=12)
    model = ns.train(
        [image, image],
        [lab, lab],
        arch="maskrcnn",
        epochs=1,
        steps_per_epoch=1,
        patch_size=64,
        batch_size=1,
        validation=0,
        device="cpu",
    )
    assert model.arch == "maskrcnn"
    with pytest.raises(SegNetError, match="once"):
        ns.train(image, lab, model="dilated", arch="maskrcnn")
