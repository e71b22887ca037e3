"""Object size estimated from the image, channel conversion, and 3D stitching of 2D models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.transform import rescale, resize

import napari_segnet as ns
from napari_segnet.postprocess.stitch import stitch_slices

SYNTHETIC_MODEL = Path(__file__).parent / "data" / "nuclei_synthetic.segnet"


@pytest.fixture(scope="module")
def nuclei():
    return ns.load_model("nuclei")


def _on_grid(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)


def test_auto_diameter_follows_magnification(nuclei):
    # Measured: AP vs the unscaled result 0.94 (2x) and 0.84 (0.5x) for this seed; at
    # 0.5x another seed (7) gives 0.73, where the unscaled result itself scores 0.76
    # against the ground truth and the 0.5x one 0.75 (small objects lose detail).
    img, gt = ns.data.synthetic_nuclei((256, 256), seed=11, diameter=14)
    ref = ns.segment(img, nuclei, device="cpu")
    ref_ap = ns.average_precision(gt, ref.instances, 0.5)
    assert ref.info["diameter_estimated"] is True
    d0 = ref.info["diameter"]
    assert 8 < d0 < 20
    for zoom in (2.0, 0.5):
        scaled = rescale(
            img.astype(np.float32), zoom, order=1, preserve_range=True, anti_aliasing=zoom < 1
        )
        res = ns.segment(scaled, nuclei, device="cpu")
        assert res.instances.shape == scaled.shape
        ratio = res.info["diameter"] / d0
        assert abs(ratio / zoom - 1) < 0.2, (zoom, ratio)
        back = _on_grid(res.instances, img.shape)
        ap = ns.average_precision(ref.instances, back, 0.5)
        assert ap >= 0.8, (zoom, ap)
        assert ns.average_precision(gt, back, 0.5) >= ref_ap - 0.1


def test_real_image_at_other_magnifications_gives_the_same_objects(nuclei):
    # Measured: AP@0.5 against the unscaled result 0.986 (2x) and 0.979 (0.5x).
    img, _ = ns.data.real_nuclei("fluorescence")
    ref = ns.segment(img, nuclei, device="cpu")
    for zoom in (2.0, 0.5):
        scaled = rescale(
            img.astype(np.float32), zoom, order=1, preserve_range=True, anti_aliasing=zoom < 1
        )
        res = ns.segment(scaled, nuclei, device="cpu")
        assert abs(res.info["diameter"] / ref.info["diameter"] / zoom - 1) < 0.2
        back = _on_grid(res.instances, img.shape)
        assert ns.average_precision(ref.instances, back, 0.5) >= 0.8, zoom


def test_given_diameter_overrides_and_none_does_not_rescale(nuclei):
    img, _ = ns.data.synthetic_nuclei((96, 96), seed=8, diameter=14)
    res = ns.segment(img, nuclei, device="cpu", diameter=30.0)
    assert res.info["diameter"] == 30.0 and res.info["diameter_estimated"] is False
    res = ns.segment(img, nuclei, device="cpu", diameter=None)
    assert res.info["diameter"] is None and res.info["rescale"] == 1.0
    with pytest.raises(ns.SegNetError, match="'auto'"):
        ns.segment(img, nuclei, diameter="big")


def test_estimate_diameter_without_training_diameter(small_unet):
    # No training diameter: "auto" is no rescaling, the estimate a plain measurement.
    img = np.random.default_rng(1).random((48, 48), dtype=np.float32)
    res = ns.segment(img, small_unet, instances=True)
    assert res.info["diameter"] is None and res.info["diameter_estimated"] is False
    d = ns.estimate_diameter(img, small_unet, max_passes=1)
    assert d is None or d > 0


def test_rgb_for_grey_model_is_converted(small_unet):
    rgb = np.random.default_rng(2).integers(0, 255, (40, 36, 3), dtype=np.uint8)
    before = rgb.copy()
    with pytest.warns(ns.SegNetWarning, match="converted to grey"):
        res = ns.segment(rgb, small_unet, axes="YXC")
    assert res.semantic.shape == (40, 36) and res.axes == "YX"
    assert res.info["notes"] and "luminance" in res.info["notes"][0]
    np.testing.assert_array_equal(rgb, before)
    grey = rgb.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32)
    np.testing.assert_allclose(
        res.probabilities, ns.segment(grey, small_unet).probabilities, atol=1e-5
    )


def test_grey_for_rgb_model_is_repeated():
    model = ns.build_model("unet", in_channels=3, n_classes=2, depth=1, width=4)
    grey = np.random.default_rng(3).random((30, 34), dtype=np.float32)
    before = grey.copy()
    with pytest.warns(ns.SegNetWarning, match="repeated 3 times"):
        res = ns.segment(grey, model)
    assert res.semantic.shape == (30, 34)
    np.testing.assert_array_equal(grey, before)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    np.testing.assert_allclose(
        res.probabilities, ns.segment(rgb, model, axes="YXC").probabilities, atol=1e-5
    )


def test_stitch_slices_keeps_frames_apart_and_any_axis_order():
    _, gt = ns.data.synthetic_nuclei((12, 40, 40), seed=4, diameter=12)
    prob = np.stack([gt == 0, gt > 0, np.zeros_like(gt, bool)]).astype(np.float32)
    one = stitch_slices(prob, "ZYX")
    assert one.shape == gt.shape and one.max() > 0
    two = stitch_slices(np.stack([prob, prob], axis=1), "TZYX")
    assert two[1].max() == 2 * one.max() and two[0].max() == one.max()
    assert ns.average_precision(one, two[1], 0.5) == 1.0
    swapped = stitch_slices(np.swapaxes(prob, 1, 3), "XYZ")
    np.testing.assert_array_equal(swapped > 0, np.swapaxes(one, 0, 2) > 0)


def test_2d_model_on_a_stack_gives_3d_objects():
    # A 2D model trained on the synthetic generator's images, so that the test is about
    # the stitching of its per-slice maps into 3D objects, not about the model.
    nuclei = ns.load_model(SYNTHETIC_MODEL)
    img, gt = ns.data.synthetic_nuclei((24, 96, 96), seed=0)
    res = ns.segment(img, nuclei, axes="ZYX", device="cpu")
    assert res.info["stitch_3d"] is True and res.instances.shape == gt.shape
    stitched = ns.average_precision(gt, res.instances, 0.5)
    per_slice = ns.segment(img, nuclei, axes="ZYX", device="cpu", stitch_3d=False)
    flat = ns.average_precision(gt, per_slice.instances, 0.5)
    assert stitched >= 0.7 and flat < 0.1, (stitched, flat)
