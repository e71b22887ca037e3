"""The command line: batch segmentation with per-input errors, training, help."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import tifffile

import napari_segnet as ns
from napari_segnet.cli import main


@pytest.fixture
def model_file(tmp_path):
    m = ns.build_model("unet", n_classes=3, depth=2, width=4)
    m.meta["target"] = "instances"
    return str(ns.save_model(m, tmp_path / "m.segnet"))


def test_help_of_each_command():
    for cmd in (["--help"], ["segment", "--help"], ["train", "--help"], ["demo", "--help"]):
        out = subprocess.run(["napari-segnet", *cmd], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "usage" in out.stdout


def test_segment_files_folders_globs_and_bad_inputs(tmp_path, model_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    img, _ = ns.data.synthetic_nuclei((96, 80), seed=0)
    tifffile.imwrite(src / "a.tif", img)
    from skimage.io import imsave

    imsave(src / "b.png", (img // 256).astype(np.uint8), check_contrast=False)
    (src / "broken.tif").write_bytes(b"not a tiff at all")
    out = tmp_path / "out"
    rc = main(
        [
            "segment",
            str(src / "a.tif"),
            str(src / "*.png"),
            str(src / "broken.tif"),
            str(tmp_path / "missing.tif"),
            "--model",
            model_file,
            "--out",
            str(out),
            "--probabilities",
            "--device",
            "cpu",
        ]
    )
    assert rc == 1  # some inputs failed ...
    err = capsys.readouterr().err
    assert "broken.tif" in err and "missing.tif" in err
    # ... and the others were still processed.
    for stem in ("a", "b"):
        sem = tifffile.imread(out / f"{stem}_semantic.tif")
        assert sem.shape == (96, 80)
        assert tifffile.imread(out / f"{stem}_instances.tif").shape == (96, 80)
        assert tifffile.imread(out / f"{stem}_probabilities.tif").shape == (3, 96, 80)
        assert (out / f"{stem}_overlay.png").exists()
    rc = main(
        ["segment", str(src), "--model", model_file, "--out", str(tmp_path / "o2"), "--quiet"]
    )
    assert rc == 1  # the folder holds the broken file too
    assert (tmp_path / "o2" / "a_semantic.tif").exists()


def test_segment_zarr_input(tmp_path, model_file):
    import zarr

    img, _ = ns.data.synthetic_nuclei((64, 72), seed=1)
    z = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=img.shape, dtype=img.dtype)
    z[...] = img
    rc = main(
        [
            "segment",
            str(tmp_path / "img.zarr"),
            "--model",
            model_file,
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert rc == 0
    assert tifffile.imread(tmp_path / "o" / "img_semantic.tif").shape == (64, 72)


def test_bad_model_gives_clear_error(tmp_path, capsys):
    (tmp_path / "x.segnet").write_bytes(b"garbage")
    rc = main(
        [
            "segment",
            "--sample",
            "nuclei",
            "--model",
            str(tmp_path / "x.segnet"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "not a napari-segnet model" in capsys.readouterr().err


def test_train_from_the_shell(tmp_path):
    img, lab = ns.data.synthetic_nuclei((96, 96), seed=2)
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    rc = main(
        [
            "train",
            "--images",
            str(tmp_path / "img.tif"),
            "--labels",
            str(tmp_path / "lab.tif"),
            "--out",
            str(tmp_path / "new.segnet"),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    m = ns.load_model(tmp_path / "new.segnet")
    assert m.meta["target"] == "instances" and m.meta["trained"]
    rc = main(
        [
            "train",
            "--images",
            str(tmp_path / "img.tif"),
            "--labels",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.segnet"),
        ]
    )
    assert rc == 2
