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


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_outputs_are_kept_unless_overwrite_and_never_replace_an_input(tmp_path, model_file, capsys):
    src = tmp_path / "in"
    src.mkdir()
    img, _ = ns.data.synthetic_nuclei((48, 40), seed=3)
    tifffile.imwrite(src / "a.tif", img)
    args = ["segment", str(src / "a.tif"), "--model", model_file, "--device", "cpu", "--quiet"]
    out = tmp_path / "out"
    rc, stdout, _ = _run(capsys, *args, "--out", str(out))
    assert rc == 0 and stdout.splitlines()[-1].startswith("all 1 input(s) segmented")
    first = (out / "a_semantic.tif").read_bytes()
    (out / "a_semantic.tif").write_bytes(b"kept")
    rc, _, err = _run(capsys, *args, "--out", str(out))
    assert rc == 2  # the only input failed
    assert "exists already; use --overwrite" in err and len(err.splitlines()) == 1
    assert (out / "a_semantic.tif").read_bytes() == b"kept"
    rc, _, _ = _run(capsys, *args, "--out", str(out), "--overwrite")
    assert rc == 0 and (out / "a_semantic.tif").read_bytes() == first
    # An input whose name is another input's output is never replaced, even with --overwrite.
    tifffile.imwrite(src / "a_semantic.tif", img)
    before = (src / "a_semantic.tif").read_bytes()
    inputs = [str(src / "a.tif"), str(src / "a_semantic.tif")]
    rc, _, err = _run(capsys, "segment", *inputs, *args[2:], "--out", str(src), "--overwrite")
    assert rc == 1 and "would replace an input" in err
    assert (src / "a_semantic.tif").read_bytes() == before
    assert (src / "a_semantic_semantic.tif").exists()  # the other input was segmented


def test_exit_codes_and_one_line_errors(tmp_path, model_file, capsys):
    img, _ = ns.data.synthetic_nuclei((40, 40), seed=4)
    tifffile.imwrite(tmp_path / "good.tif", img)
    (tmp_path / "bad.tif").write_bytes(b"\x00" * 64)
    common = ["--model", model_file, "--device", "cpu", "--quiet"]
    # A bad argument: one line, no traceback, nothing segmented.
    rc, _, err = _run(
        capsys,
        "segment",
        str(tmp_path / "good.tif"),
        *common,
        "--out",
        str(tmp_path / "o1"),
        "--diameter",
        "nan",
    )
    assert rc == 2 and len(err.splitlines()) == 1 and "diameter" in err and "Traceback" not in err
    assert not (tmp_path / "o1").exists()
    # Some inputs fail: status 1, each failure one line, the summary says so first.
    rc, stdout, err = _run(
        capsys,
        "segment",
        str(tmp_path / "good.tif"),
        str(tmp_path / "bad.tif"),
        str(tmp_path / "none.tif"),
        *common,
        "--out",
        str(tmp_path / "o2"),
    )
    assert rc == 1
    assert len(err.splitlines()) == 2 and "bad.tif" in err and "none.tif" in err
    assert stdout.splitlines()[-1].startswith("2 of 3 input(s) failed")
    # Every input fails: status 2.
    rc, stdout, err = _run(
        capsys, "segment", str(tmp_path / "bad.tif"), *common, "--out", str(tmp_path / "o3")
    )
    assert rc == 2 and len(err.splitlines()) == 1
    assert stdout.splitlines()[-1] == "all 1 input(s) failed; nothing written"


def test_a_failed_write_leaves_no_file(tmp_path, model_file, capsys, monkeypatch):
    img, _ = ns.data.synthetic_nuclei((40, 40), seed=5)
    tifffile.imwrite(tmp_path / "img.tif", img)

    def disk_full(path, data, **kw):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", disk_full)
    out = tmp_path / "out"
    rc, _, err = _run(
        capsys,
        "segment",
        str(tmp_path / "img.tif"),
        "--model",
        model_file,
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    )
    assert rc == 2 and "No space left" in err
    assert list(out.iterdir()) == []  # neither a half-written result nor a temporary file
