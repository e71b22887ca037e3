"""Provenance records: the weights hash, file hash, parameters, version and time."""

from __future__ import annotations

import datetime
import hashlib
import json

import numpy as np
import torch

import napari_segnet as ns
from napari_segnet.provenance import file_sha256, weights_sha256


def independent_hash(model) -> str:
    """The documented recipe, written out again: name, dtype, shape, bytes per tensor."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode() + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(bytes(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def test_weights_hash_follows_the_weights(small_unet, tmp_path):
    h = weights_sha256(small_unet)
    assert h == independent_hash(small_unet)
    path = ns.save_model(small_unet, tmp_path / "m.segnet")
    loaded = ns.load_model(path)
    assert weights_sha256(loaded) == h  # same weights, same hash, wherever they came from
    other = ns.build_model("unet", n_classes=3, depth=3, width=4)
    assert weights_sha256(other) != h


def test_segment_result_carries_provenance(small_unet, tmp_path):
    path = ns.save_model(small_unet, tmp_path / "m.segnet")
    model = ns.load_model(path)
    image = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    res = ns.segment(image, model, tile_size=32, device="cpu", instances=True)
    p = res.provenance
    json.dumps(p)  # JSON-able as it is
    assert p["model"]["weights_sha256"] == independent_hash(model)
    assert p["model"]["path"] == str(path.resolve())
    assert p["model"]["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert p["model"]["file_sha256"] == file_sha256(path)
    assert p["software"]["version"] == ns.__version__
    assert p["parameters"]["tile_size"] == 32
    assert p["parameters"]["device"] == "cpu"
    assert p["parameters"]["crf"] is False
    assert "interior_threshold" in p["parameters"]["instance_options"]
    assert p["resolved"]["device"] == "cpu"
    assert p["input"]["shape"] == [48, 48]
    when = datetime.datetime.fromisoformat(p["time"])
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 3600
