"""Typed settings, and model files written by an earlier release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import napari_segnet as ns
from napari_segnet.options import CRFOptions, InstanceOptions, ModelMeta, Normalization

DATA = Path(__file__).parent / "data"


def test_model_file_of_release_0_1_0_loads_and_predicts_the_same():
    # Written by napari-segnet 0.1.0 (before the typed settings), with its prediction.
    model = ns.load_model(DATA / "model_v0.1.0.segnet")
    assert model.meta["target"] == "instances"
    assert model.meta["instance_options"] == {"interior_threshold": 0.6}
    assert model.meta["normalization"] == {"kind": "percentile", "low": 1.0, "high": 99.8}
    meta = model.metadata
    assert meta.instance_options.interior_threshold == 0.6 and meta.diameter == 14.0
    assert meta.normalization == Normalization()
    image = np.load(DATA / "model_v0.1.0_image.npy")
    expected = np.load(DATA / "model_v0.1.0_probabilities.npy")
    got = ns.predict(image, model, device="cpu")
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_meta_round_trip_keeps_the_dict_as_it_was(tmp_path):
    model = ns.build_model("unet", n_classes=3, depth=2, width=4)
    fresh = dict(model.meta)
    assert ModelMeta.from_dict(fresh).to_dict() == fresh
    model.meta.update(instance_options={"foreground_threshold": 0.4}, name="mine")
    path = ns.save_model(model, tmp_path / "m.segnet")
    again = ns.load_model(path)
    assert again.meta == model.meta
    assert again.metadata.extra == {"name": "mine"}
    assert again.metadata.instance_options.changed() == {"foreground_threshold": 0.4}


@pytest.mark.parametrize(
    ("cls", "values", "word"),
    [
        (InstanceOptions, {"interior_threshold": float("nan")}, "interior_threshold"),
        (InstanceOptions, {"interior_threshold": 2.0}, "interior_threshold"),
        (InstanceOptions, {"min_distance": 0}, "min_distance"),
        (InstanceOptions, {"mode": "magic"}, "mode"),
        (InstanceOptions, {"bogus": 1}, "bogus"),
        (CRFOptions, {"bilateral_sxy": float("inf")}, "bilateral_sxy"),
        (Normalization, {"kind": "zscore"}, "zscore"),
        (Normalization, {"low": 99.0, "high": 1.0}, "percentile"),
    ],
)
def test_bad_settings_are_named_in_the_error(cls, values, word):
    with pytest.raises(ns.SegNetError, match=word):
        cls.from_dict(values)


def test_segment_checks_instance_options_before_any_work():
    model = ns.build_model("unet", n_classes=3, depth=2, width=4)
    model.meta["target"] = "instances"
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(ns.SegNetError, match="bogus"):
        ns.segment(image, model, instance_options={"bogus": 1})


def test_defaults_live_in_the_options():
    import inspect

    sig = inspect.signature(ns.label_instances).parameters
    default = InstanceOptions()
    assert sig["interior_threshold"].default == default.interior_threshold
    assert sig["min_distance"].default == default.min_distance
    crf = inspect.signature(ns.refine_crf).parameters
    assert crf["bilateral_sxy"].default == CRFOptions().bilateral_sxy
