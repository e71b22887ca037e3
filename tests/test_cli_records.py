"""The command line's measurements, batch summary, provenance sidecars and time-lapse ids."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import tifffile

import napari_segnet as ns
from napari_segnet.cli import main
from tests.test_provenance import independent_hash
from tests.test_tracking import kept_ids


def test_measure_summary_and_provenance(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for seed in (0, 1):
        img, _ = ns.data.synthetic_nuclei((96, 112), seed=seed)
        tifffile.imwrite(src / f"img{seed}.tif", img)
    model_path = ns.save_model(ns.load_model("nuclei"), tmp_path / "model.segnet")
    out = tmp_path / "out"
    args = ["segment", str(src), "--model", str(model_path), "--out", str(out)]
    args += ["--device", "cpu", "--quiet", "--measure", "--tile-size", "64"]
    assert main(args) == 0
    summary = pd.read_csv(out / "measurements_summary.csv")
    assert len(summary) == 2
    for seed, row in zip((0, 1), summary.itertuples(), strict=True):
        labels = tifffile.imread(out / f"img{seed}_instances.tif")
        table = pd.read_csv(out / f"img{seed}_measurements.csv")
        ids = np.unique(labels)[1:]
        assert list(table["label"]) == list(ids) and row.count == len(ids) > 5
        areas = np.bincount(labels.ravel())[ids]
        assert row.median_area_px2 == np.median(areas)
        np.testing.assert_array_equal(table["area_px2"], areas)
        img = tifffile.imread(src / f"img{seed}.tif")
        assert table["max_intensity"].iloc[0] == img[labels == ids[0]].max()
        record = json.loads((out / f"img{seed}_provenance.json").read_text())
        assert record["model"]["weights_sha256"] == independent_hash(ns.load_model(model_path))
        assert record["model"]["file_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
        assert record["parameters"]["tile_size"] == 64
        assert record["input"]["source"].endswith(f"img{seed}.tif")
        assert f"img{seed}_measurements.csv" in record["outputs"]
        assert f"img{seed}_instances.tif" in record["outputs"]
    # A second run does not replace the summary without --overwrite.
    assert main(args) == 2
    assert "measurements_summary.csv exists" in capsys.readouterr().err


def test_link_time_flag(tmp_path):
    images, gt = ns.data.synthetic_timelapse(3, (128, 128), seed=5, step=3.0)
    tifffile.imwrite(tmp_path / "movie.tif", images)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "movie.tif"), "--axes", "TYX", "--model", "nuclei"]
    args += ["--out", str(out), "--device", "cpu", "--quiet", "--link-time"]
    assert main(args) == 0
    labels = tifffile.imread(out / "movie_instances.tif")
    frac, n = kept_ids(gt, labels)
    assert n > 30 and frac >= 0.95
    record = json.loads((out / "movie_provenance.json").read_text())
    assert record["parameters"]["link_time"] == {"min_iou": 0.1}
