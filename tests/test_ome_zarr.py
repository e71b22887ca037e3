"""OME-Zarr in, OME-NGFF labels out: validity, equality with in-memory runs, resuming."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import napari_segnet as ns
from napari_segnet.io.ome_labels import label_names
from napari_segnet.io.zarr_output import COMPLETE_ATTR

pytest.importorskip("ome_zarr")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def write_ome_image(
    path: Path, image: np.ndarray, axes: str, scale: dict, version="0.5", chunks=None
):
    """An OME-Zarr image written by ome-zarr-py (two pyramid levels)."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV05() if version == "0.5" else FormatV04()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    units = dict.fromkeys(scale, "micrometer")
    write_image(
        image,
        group,
        axes=axes,
        fmt=fmt,
        scale=scale,
        axes_units=units,
        scale_factors=(2,),
        storage_options={"chunks": chunks or image.shape},
    )
    return path


def per_object_iou(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """For each object of ``ref``, its IoU with the object of ``got`` it overlaps most."""
    r, g = ref.ravel().astype(np.int64), got.ravel().astype(np.int64)
    pairs, counts = np.unique(np.stack([r, g]), axis=1, return_counts=True)
    area_r = np.bincount(r)
    area_g = np.bincount(g)
    best = np.zeros(area_r.size)
    for (a, b), n in zip(pairs.T, counts):
        if a and b:
            best[a] = max(best[a], n / (area_r[a] + area_g[b] - n))
    return best[np.unique(r[r > 0])]


def tree_digest(path: Path, skip: str = "labels") -> str:
    """A hash of every file under ``path`` except ``skip`` (the image arrays unchanged)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if p.is_file() and rel.parts[0] != skip:
            h.update(str(rel).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def nuclei():
    return ns.load_model("nuclei")


@pytest.fixture(scope="module")
def image2d():
    img, _ = ns.data.synthetic_nuclei((224, 192), seed=3)
    return img


@pytest.fixture(scope="module")
def reference(image2d, nuclei):
    return ns.segment(image2d, nuclei, diameter=None)


def test_read_levels_axes_scale_lazily(tmp_path, image2d):
    vol = np.stack([image2d[:, :180]] * 4)
    p = write_ome_image(
        tmp_path / "v.ome.zarr", vol, "zyx", {"z": 2.0, "y": 0.5, "x": 0.5}, chunks=(1, 64, 64)
    )
    im = ns.read_ome_zarr(p)
    assert (im.axes, im.scale, im.n_levels, im.version) == ("ZYX", (2.0, 0.5, 0.5), 2, "0.5")
    assert im.units == ("micrometer",) * 3 and im.anisotropy == 4.0
    assert hasattr(im.data, "dask") and im.data.shape == vol.shape  # lazy
    np.testing.assert_array_equal(np.asarray(im.data), vol)
    low = ns.read_ome_zarr(p, level=1)
    assert low.data.shape == (4, 112, 90) and low.scale == (2.0, 1.0, 1.0)
    with pytest.raises(ns.SegNetError, match="level must be"):
        ns.read_ome_zarr(p, level=2)
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("0", shape=(8, 8), dtype="u1")
    with pytest.raises(ns.SegNetError, match="not an OME-Zarr image"):
        ns.read_ome_zarr(plain)
    with pytest.raises(ns.SegNetError, match="not an OME-Zarr image"):
        ns.segment_ome_zarr(plain, ns.load_model("nuclei"), tmp_path / "o.zarr")


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_labels_into_input_are_valid_ngff_and_match_memory(
    tmp_path, image2d, nuclei, reference, version
):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    p = write_ome_image(
        tmp_path / "img.ome.zarr", image2d, "yx", {"y": 0.5, "x": 0.5}, version, chunks=(100, 100)
    )  # chunks unrelated to the blocks
    before = tree_digest(p)
    res = ns.segment_ome_zarr(p, nuclei, into_input=True, block_size=120, label_halo=40)
    assert res.info["block"] == (128, 128)  # rounded up to the network's divisor
    assert tree_digest(p) == before  # the image arrays and metadata untouched
    # The maintained library's validators accept the image with its labels.
    models = pytest.importorskip(f"ome_zarr_models.v0{version[-1]}")
    root = zarr.open_group(str(p), mode="r")
    models.Image.from_zarr(root)
    for name in ("segnet_semantic", "segnet_instances"):
        models.ImageLabel.from_zarr(root["labels"][name])
        assert root["labels"][name].attrs[COMPLETE_ATTR] is True
    assert label_names(root) == ["segnet_semantic", "segnet_instances"]
    # ome-zarr-py's reader finds both labels, with the image's pixel size.
    nodes = [n for n in Reader(parse_url(str(p)))() if any(isinstance(s, Label) for s in n.specs)]
    assert len(nodes) == 2
    ct = nodes[0].metadata["coordinateTransformations"]
    assert ct[0][0]["scale"] == [0.5, 0.5] and ct[1][0]["scale"] == [1.0, 1.0]
    sem = np.asarray(root["labels/segnet_semantic/0"])
    inst = np.asarray(root["labels/segnet_instances/0"])
    np.testing.assert_array_equal(sem, reference.semantic)
    assert res.n_objects == inst.max() == reference.instances.max() > 20
    assert per_object_iou(reference.instances, inst).min() >= 0.99
    # The pyramid is nearest-neighbour: level 1 is every second pixel of level 0.
    np.testing.assert_array_equal(np.asarray(root["labels/segnet_instances/1"]), inst[::2, ::2])
    colors = dict(root["labels/segnet_semantic"].attrs)
    colors = colors.get("ome", colors)["image-label"]["colors"]
    assert [c["label-value"] for c in colors] == [0, 1, 2] and colors[0]["rgba"][3] == 0


def test_new_store_refuses_overwrite_and_bad_outputs(tmp_path, image2d, nuclei):
    p = write_ome_image(tmp_path / "img.ome.zarr", image2d[:128, :128], "yx", {"y": 1, "x": 1})
    out = tmp_path / "out.zarr"
    res = ns.segment_ome_zarr(p, nuclei, out, block_size=128, instances=False)
    assert res.labels == {"semantic": out / "labels" / "segnet_semantic"}
    with pytest.raises(ns.SegNetError, match="exist already"):
        ns.segment_ome_zarr(p, nuclei, out, block_size=128, instances=False)
    ns.segment_ome_zarr(p, nuclei, out, block_size=128, instances=False, overwrite=True)
    assert label_names(zarr.open_group(str(out), mode="r")) == ["segnet_semantic"]
    with pytest.raises(ns.SegNetError, match="into_input"):
        ns.segment_ome_zarr(p, nuclei, p)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ns.SegNetError, match="cannot write"):
        ns.segment_ome_zarr(p, nuclei, blocker / "out.zarr")


_KILLED_RUN = """
import os, signal, sys
import napari_segnet as ns
def stop(done, total):
    if done == 2:  # two blocks recorded: die without any chance to clean up
        os.kill(os.getpid(), signal.SIGKILL)
ns.segment_ome_zarr(sys.argv[1], ns.load_model("nuclei"), sys.argv[2], block_size=128,
                    label_halo=32, progress=stop)
"""


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, image2d, nuclei):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    p = write_ome_image(tmp_path / "img.ome.zarr", image2d, "yx", {"y": 1, "x": 1})
    killed, whole = tmp_path / "killed.zarr", tmp_path / "whole.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(p), str(killed)], env=env)
    assert run.returncode == -signal.SIGKILL
    # The unfinished output is marked: no label listed, none complete, none readable.
    root = zarr.open_group(str(killed), mode="r")
    assert label_names(root) == []
    assert root["labels/segnet_instances"].attrs[COMPLETE_ATTR] is False
    assert not [
        n for n in Reader(parse_url(str(killed)))() if any(isinstance(s, Label) for s in n.specs)
    ]
    res = ns.segment_ome_zarr(p, nuclei, killed, block_size=128, label_halo=32)
    assert (res.n_blocks, res.n_resumed) == (4, 2)  # finished blocks were not recomputed
    ref = ns.segment_ome_zarr(p, nuclei, whole, block_size=128, label_halo=32)
    assert ref.n_resumed == 0
    a, b = zarr.open_group(str(killed), mode="r"), zarr.open_group(str(whole), mode="r")
    for name in ("segnet_semantic", "segnet_instances"):
        for level in ("0", "1"):
            np.testing.assert_array_equal(a[f"labels/{name}/{level}"], b[f"labels/{name}/{level}"])
    assert not (killed / "labels" / "segnet.job").exists()  # the job record is cleaned up
    # Other settings on an unfinished job are refused rather than mixed in.
    (killed / "labels" / "segnet.job").mkdir()
    (killed / "labels" / "segnet.job" / "job.json").write_text("{}")
    with pytest.raises(ns.SegNetError, match="unfinished job"):
        ns.segment_ome_zarr(p, nuclei, killed, block_size=128, label_halo=32)


def test_stack_with_channel_axis_keeps_axes_and_scale(tmp_path):
    # A 2D model on a (C, Z, Y, X) stack: Z is an outer axis, C is kept with size 1.
    model = ns.build_model("unet", n_classes=3, depth=2, width=4).eval()
    model.meta["target"] = "semantic"
    vol = np.random.default_rng(0).integers(0, 255, (1, 3, 64, 48), dtype=np.uint8)
    p = write_ome_image(tmp_path / "v.ome.zarr", vol, "czyx", {"c": 1, "z": 3, "y": 0.5, "x": 0.5})
    res = ns.segment_ome_zarr(p, model, into_input=True, block_size=32)
    ref = ns.segment(vol, model, axes="CZYX", diameter=None)
    root = zarr.open_group(str(p), mode="r")
    sem = root["labels/segnet_semantic/0"]
    assert sem.shape == (1, 3, 64, 48) and sem.chunks == (1, 1, 32, 32)
    np.testing.assert_array_equal(np.asarray(sem)[0], ref.semantic)
    assert (res.n_blocks, res.info["anisotropy"]) == (3 * 2 * 2, 6.0)
    im = ns.read_ome_zarr(p / "labels" / "segnet_semantic")
    assert (im.axes, im.scale) == ("CZYX", (1.0, 3.0, 0.5, 0.5))


def test_cli_segments_ome_zarr_and_keeps_existing_labels(tmp_path, image2d, capsys):
    from napari_segnet.cli import main

    img = image2d[:128, :128]
    p = write_ome_image(tmp_path / "cells.ome.zarr", img, "yx", {"y": 1, "x": 1})
    out = tmp_path / "out"
    args = ["segment", str(p), "--out", str(out), "--block-size", "64", "--quiet"]
    assert main(args) == 0
    root = zarr.open_group(str(out / "cells_labels.ome.zarr"), mode="r")
    assert label_names(root) == ["segnet_semantic", "segnet_instances"]
    assert "4 blocks" in capsys.readouterr().out
    assert main(args) == 2  # the labels exist: refused without --overwrite
    assert "use overwrite (--overwrite)" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    rc = main(
        ["segment", str(p), "--out", str(out), "--into-input", "--labels-name", "mine", "--quiet"]
    )
    assert rc == 0
    assert "mine_instances" in label_names(zarr.open_group(str(p), mode="r"))
