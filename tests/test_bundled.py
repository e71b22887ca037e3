"""The bundled nuclei model: offline, small, and good on fresh synthetic nuclei."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import napari_segnet as ns
from napari_segnet.io.bundled import BUNDLED_DIR


@pytest.fixture(scope="module")
def nuclei():
    return ns.load_model("nuclei")


def test_listed_small_and_loads_offline(monkeypatch):
    assert "nuclei" in ns.available_models()
    path = BUNDLED_DIR / "nuclei.segnet"
    assert path.stat().st_size < 10 * 2**20

    def no_network(*a, **k):
        raise AssertionError("the bundled model must not touch the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    m = ns.load_model("nuclei")
    assert m.meta["target"] == "instances" and m.n_classes == 3
    assert m.meta["classes"] == ["background", "interior", "boundary"]
    assert 10 < m.meta["diameter"] < 40


def test_scores_well_on_fresh_synthetic_nuclei(nuclei):
    aps = []
    for seed in (501, 502):
        img, gt = ns.data.synthetic_nuclei((384, 384), seed=seed, diameter=18)
        res = ns.segment(img, nuclei, device="cpu")
        aps.append(ns.average_precision(gt, res.instances, 0.5))
    assert np.mean(aps) >= 0.75, aps


def test_diameter_adapts_to_magnification(nuclei):
    # Nuclei three times the training size: telling segment their size helps, and so
    # does the default diameter="auto" (estimated from the image).
    img, gt = ns.data.synthetic_nuclei((512, 512), seed=503, diameter=60, n_objects=40)
    plain = ns.average_precision(gt, ns.segment(img, nuclei, diameter=None).instances, 0.5)
    scaled = ns.average_precision(gt, ns.segment(img, nuclei, diameter=60).instances, 0.5)
    assert scaled >= 0.65 and scaled > plain + 0.2, (plain, scaled)
    auto = ns.average_precision(gt, ns.segment(img, nuclei).instances, 0.5)
    assert auto >= 0.65 and auto > plain + 0.2, (plain, auto)


def test_cli_main_job(tmp_path):
    from napari_segnet.cli import main

    assert main(["segment", "--sample", "nuclei", "--out", str(tmp_path), "--quiet"]) == 0
    import tifffile

    inst = tifffile.imread(tmp_path / "sample_nuclei_instances.tif")
    assert inst.shape == (512, 512) and inst.max() > 50
