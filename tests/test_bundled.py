"""The bundled nuclei models: offline, small, documented, and good on real nuclei."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from skimage.transform import rescale

import napari_segnet as ns
from napari_segnet.io.bundled import BUNDLED_DIR


@pytest.fixture(scope="module")
def nuclei():
    return ns.load_model("nuclei")


def test_listed_small_and_loads_offline(monkeypatch):
    assert {"nuclei", "nuclei_he"} <= set(ns.available_models())

    def no_network(*a, **k):
        raise AssertionError("the bundled models must not touch the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name, channels, modalities in (
        ("nuclei", 1, {"fluorescence", "brightfield"}),
        ("nuclei_he", 3, {"stained"}),
    ):
        assert (BUNDLED_DIR / f"{name}.segnet").stat().st_size <= 30 * 2**20
        m = ns.load_model(name)
        assert m.in_channels == channels
        assert m.meta["target"] == "instances" and m.n_classes == 3
        assert m.meta["classes"] == ["background", "interior", "boundary"]
        assert 10 < m.meta["diameter"] < 40
        # What it was trained on, and how well it did on images it never saw.
        card = m.meta["card"]
        assert card["licence"] == "CC0-1.0" and "Caicedo" in card["citation"]
        assert card["images"] == card["train_images"] + card["validation_images"] > 50
        lo, hi = m.meta["diameter_range"]
        assert 5 < lo < m.meta["diameter"] < hi < 100
        scores = m.meta["scores"]["dsb2018_validation"]
        assert set(scores) == modalities
        assert all(0 < s["AP@0.5"] <= 1 and s["images"] > 0 for s in scores.values())


# Floors: the measured value on the bundled real samples minus a small margin
# (measured: fluorescence AP@0.5 0.877, AP@0.75 0.785; H&E AP@0.5 0.382).
def test_real_fluorescence_sample(nuclei):
    img, gt = ns.data.real_nuclei("fluorescence")
    res = ns.segment(img, nuclei, device="cpu")
    assert ns.average_precision(gt, res.instances, 0.5) >= 0.83
    assert ns.average_precision(gt, res.instances, 0.75) >= 0.72
    assert res.info["diameter_estimated"] is True


def test_real_he_sample():
    img, gt = ns.data.real_nuclei("he")
    res = ns.segment(img, ns.load_model("nuclei_he"), device="cpu")
    assert res.instances.shape == gt.shape
    assert ns.average_precision(gt, res.instances, 0.5) >= 0.33


def test_diameter_adapts_to_magnification(nuclei):
    # The real nuclei at three times their size: the default diameter="auto"
    # (estimated from the image) brings them back to the trained size.
    img, gt = ns.data.real_nuclei("fluorescence")
    big = rescale(img.astype(np.float32), 3.0, order=1, preserve_range=True)
    gt_big = rescale(gt, 3.0, order=0, preserve_range=True, anti_aliasing=False).astype(int)
    plain = ns.segment(big, nuclei, diameter=None)
    auto = ns.segment(big, nuclei)
    ap_plain = ns.average_precision(gt_big, plain.instances, 0.5)
    ap_auto = ns.average_precision(gt_big, auto.instances, 0.5)
    assert ap_auto >= 0.8 and ap_auto > ap_plain + 0.2, (ap_plain, ap_auto)


def test_cli_main_job(tmp_path):
    # The README's main job: the real fluorescence sample through the default model, and
    # the H&E sample, which --model auto (the default) gives to the colour model.
    import tifffile

    from napari_segnet.cli import main

    for sample, name in (("fluorescence", "nuclei"), ("he", "nuclei_he")):
        assert main(["segment", "--sample", sample, "--out", str(tmp_path), "--quiet"]) == 0
        inst = tifffile.imread(tmp_path / f"sample_{sample}_instances.tif")
        image, _ = ns.data.real_nuclei(sample)
        expected = ns.segment(image, ns.load_model(name)).instances
        np.testing.assert_array_equal(inst, expected)
        assert (tmp_path / f"sample_{sample}_overlay.png").is_file()
