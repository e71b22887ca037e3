"""Physical pixel sizes: spacing and diameters in µm through ``segment``, and TIFF metadata
through the command line."""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import pytest
import tifffile
from skimage.transform import downscale_local_mean

import napari_segnet as ns
from napari_segnet.cli import main
from napari_segnet.engine import physical
from napari_segnet.engine.axes import make_layout
from napari_segnet.io.image_meta import read_image_meta

# The module (the package exports the function under the same name).
segment_module = importlib.import_module("napari_segnet.segment")


@pytest.fixture(scope="module")
def nuclei():
    return ns.load_model("nuclei")


def _two_samplings(seed: int):
    """The same nuclei imaged at 0.5 µm and at 1 µm (2 x 2 pixels averaged)."""
    img, _ = ns.data.synthetic_nuclei((256, 256), seed=seed, diameter=24, noise=0.3, touching=0.2)
    fine = img.astype(np.float32)
    return fine, downscale_local_mean(fine, (2, 2)).astype(np.float32)


def test_same_objects_at_two_pixel_sizes(nuclei):
    scores, unscaled = [], []
    for seed in range(3):
        fine, coarse = _two_samplings(seed)
        a = ns.segment(fine, nuclei, spacing=0.5, physical_diameter=12.0)
        b = ns.segment(coarse, nuclei, spacing=(1.0, 1.0), physical_diameter=12.0)
        # 12 µm objects are 24 px at 0.5 µm and 12 px at 1 µm; the model's are 20 px.
        assert a.info["zoom"] == pytest.approx({"Y": 20 / 24, "X": 20 / 24})
        assert b.info["zoom"] == pytest.approx({"Y": 20 / 12, "X": 20 / 12})
        assert a.info["physical_diameter"] == pytest.approx(12.0)
        # Results come back on each input's own grid.
        assert a.instances.shape == fine.shape and b.instances.shape == coarse.shape
        up = np.repeat(np.repeat(b.instances, 2, 0), 2, 1)
        scores.append(ns.average_precision(a.instances, up, 0.5))
        plain = ns.segment(coarse, nuclei, diameter=None).instances
        unscaled.append(ns.average_precision(a.instances, np.repeat(np.repeat(plain, 2, 0), 2, 1)))
    assert np.mean(scores) >= 0.9, scores
    assert np.mean(scores) > np.mean(unscaled), (scores, unscaled)


def test_model_pixel_size_sets_the_zoom_without_a_diameter(nuclei, monkeypatch):
    model = ns.load_model("nuclei")
    model.meta["pixel_size"] = [0.5, 0.5]
    _, coarse = _two_samplings(0)
    monkeypatch.setattr(
        segment_module, "estimate_diameter", lambda *a, **k: pytest.fail("no estimate needed")
    )
    res = ns.segment(coarse, model, spacing=1.0)
    assert res.info["zoom"] == {"Y": 2.0, "X": 2.0} and res.info["zoom_reason"] == "pixel size"
    assert res.info["diameter"] == pytest.approx(10.0)  # 20 px at 0.5 µm is 10 px at 1 µm
    assert res.instances.shape == coarse.shape


def test_z_spacing_reaches_3d_models_and_stitching(nuclei, monkeypatch):
    net3d = ns.build_model("unet", dims=3, n_classes=3, depth=2, width=4)
    net3d.meta["diameter"] = 10.0
    layout = make_layout((8, 32, 32), "ZYX", 3, 1)
    spacing = physical.check_spacing((2.0, 0.5, 0.5), "ZYX")
    # 5 µm objects are 10 px across in-plane: no in-plane zoom, Z zoomed to cubic voxels.
    zoom = physical.zoom_for(net3d, layout, spacing, 10.0 / (5.0 / 0.5))
    assert zoom.factors == pytest.approx((4.0, 1.0, 1.0)) and zoom.plane == pytest.approx(1.0)
    net3d.meta["pixel_size"] = [1.0, 0.5, 0.5]  # trained at Z twice XY: Z zoomed half as much
    zoom = physical.zoom_for(net3d, layout, spacing, 1.0)
    assert zoom.factors == pytest.approx((2.0, 1.0, 1.0))
    res = ns.segment(np.random.default_rng(0).random((8, 32, 32)), net3d, spacing=(2, 0.5, 0.5))
    assert res.info["zoom"] == pytest.approx({"Z": 2.0, "Y": 1.0, "X": 1.0})
    assert res.semantic.shape == (8, 32, 32)
    # A 2D model on a stack: Z spacing over XY spacing is the stitching anisotropy.
    seen = []
    real = segment_module._stitch
    monkeypatch.setattr(segment_module, "_stitch", lambda *a: seen.append(a[-1]) or real(*a))
    stack, _ = ns.data.synthetic_nuclei((8, 64, 64), seed=0, anisotropy=3.0)
    ns.segment(stack, nuclei, "ZYX", diameter=None, spacing=(1.5, 0.5, 0.5))
    assert seen == [pytest.approx(3.0)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1.0, 1.0, 1.0)}, "one per spatial axis (YX)"),
        ({"spacing": 0}, "spacing must be"),
        ({"spacing": (-1.0, 1.0)}, "spacing must be"),
        ({"spacing": (math.nan, 1.0)}, "spacing must be"),
        ({"spacing": "0.5"}, "spacing must be"),
        ({"physical_diameter": 10.0}, "needs spacing"),
        ({"spacing": 0.5, "physical_diameter": -1.0}, "physical_diameter must be"),
        ({"spacing": 0.5, "physical_diameter": 10.0, "diameter": 20}, "not both"),
        ({"spacing": 0.5, "anisotropy": 2.0}, "not both"),
        ({"spacing": 0.5, "physical_diameter": 1000.0}, "physical_diameter=1000 is 2e+03 px"),
    ],
)
def test_bad_spacing_is_refused_before_any_work(nuclei, kwargs, message):
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(ns.SegNetError, match=re.escape(message)):
        ns.segment(img, nuclei, "YX", **kwargs)


def _write_inputs(folder):
    stack, _ = ns.data.synthetic_nuclei((8, 96, 96), seed=0, anisotropy=3.0)
    stack = stack.astype(np.uint16)
    tifffile.imwrite(
        folder / "ij.tif",
        stack,
        imagej=True,
        resolution=(1 / 0.65, 1 / 0.65),
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
    )
    tifffile.imwrite(
        folder / "ome.tif",
        stack,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.65,
            "PhysicalSizeY": 0.65,
            "PhysicalSizeZ": 2.0,
        },
    )
    tifffile.imwrite(folder / "plain.tif", stack)  # no metadata: shaped, axes unknown


def test_cli_outputs_keep_resolution_axes_and_imagej_ome_metadata(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_inputs(inp)
    out = tmp_path / "out"
    rc = main(["segment", str(inp), "--out", str(out), "--quiet", "--probabilities"])
    assert rc == 0
    for name in ("ij_instances", "ij_semantic"):
        with tifffile.TiffFile(out / f"{name}.tif") as tf:
            assert tf.is_imagej and tf.series[0].axes == "ZYX"
            assert tf.imagej_metadata["spacing"] == 2.0 and tf.imagej_metadata["unit"] == "um"
            assert tf.pages[0].resolution == pytest.approx((1 / 0.65, 1 / 0.65))
    with tifffile.TiffFile(out / "ij_probabilities.tif") as tf:
        assert tf.series[0].axes == "ZCYX" and tf.series[0].shape == (8, 3, 96, 96)
    meta = read_image_meta(out / "ome_instances.tif")
    assert meta.kind == "ome" and meta.axes == "ZYX"
    assert meta.spacing == pytest.approx({"Z": 2.0, "Y": 0.65, "X": 0.65})
    with tifffile.TiffFile(out / "plain_instances.tif") as tf:
        assert tf.series[0].axes == "ZYX"  # was "QYX" when written without axes
    # Instance ids are the same whichever file kind carried them.
    ij = tifffile.imread(out / "ij_instances.tif")
    ome = tifffile.imread(out / "ome_instances.tif")
    np.testing.assert_array_equal(ij, ome)


def test_cli_passes_the_file_spacing_to_segment(tmp_path, monkeypatch):
    _write_inputs(tmp_path)
    seen = {}
    real = ns.segment

    def spy(image, model, **kw):
        seen.update(kw)
        return real(image, model, **kw)

    monkeypatch.setattr(ns, "segment", spy)
    args = ["segment", str(tmp_path / "ij.tif"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--physical-diameter", "13"]) == 0
    assert seen["axes"] == "ZYX" and seen["physical_diameter"] == 13.0
    assert seen["spacing"] == pytest.approx((2.0, 0.65, 0.65))
    assert main([*args, "--spacing", "none", "--overwrite"]) == 0
    assert seen["spacing"] is None
    assert main([*args, "--diameter", "20", "--physical-diameter", "13", "--overwrite"]) == 2


def test_read_image_meta_plain_tiff_resolution(tmp_path):
    img = np.zeros((16, 16), np.uint8)
    tifffile.imwrite(
        tmp_path / "cm.tif", img, resolution=(10000 / 0.5, 10000 / 0.5), resolutionunit=3
    )
    tifffile.imwrite(tmp_path / "dpi.tif", img, resolution=(72, 72), resolutionunit=2)
    cm = read_image_meta(tmp_path / "cm.tif")
    assert cm.spacing == pytest.approx({"Y": 0.5, "X": 0.5}) and cm.unit == "µm"
    dpi = read_image_meta(tmp_path / "dpi.tif")
    assert dpi.spacing is None and dpi.resolution == (72, 72)  # kept for writing, not a size
    assert read_image_meta(tmp_path / "missing.tif").kind == "none"
