"""The overlap-tile engine: exact over tile sizes, any layout, dask, zarr, cancel, progress."""

from __future__ import annotations

import functools
import threading

import dask.array as da
import numpy as np
import pytest
import torch

import napari_segnet as ns
from napari_segnet.engine.axes import guess_axes, make_layout, mirror_index, read_region
from napari_segnet.engine.geometry import border_pad

from .conftest import randomize_norm_stats

# Exactness is about the tiling arithmetic, so it is checked in float32 on the CPU;
# the CUDA tests at the end compare the GPU paths with these references.
predict = functools.partial(ns.predict, device="cpu")
segment = functools.partial(ns.segment, device="cpu")
predict_dask = functools.partial(ns.predict_dask, device="cpu")


def _untiled(image: np.ndarray, model, axes: str, border=None) -> np.ndarray:
    """Independent reference: mirror-pad the whole image, one forward pass, crop.

    Written without the engine: numpy's reflect padding by the border padding (plus
    up to the divisor), percentile normalisation per image, softmax.
    """
    layout = make_layout(image.shape, axes, model.dims, model.in_channels)
    x = np.moveaxis(image, layout.channel, 0) if layout.channel is not None else image[None]
    x = x.astype(np.float64)
    outer_n = len(layout.outer)
    x = np.moveaxis(x, 0, outer_n)  # outer..., C, spatial
    lo, hi = np.percentile(x, [1.0, 99.8])
    x = ((x - lo) / (hi - lo)).astype(np.float32)
    h, d = border_pad(model, border), model.divisor
    spatial = x.shape[outer_n + 1 :]
    pads = [(0, 0)] * (outer_n + 1) + [(h, h + (-s) % d) for s in spatial]
    xp = np.pad(x, pads, mode="reflect")
    flat = xp.reshape((-1, *xp.shape[outer_n:]))
    with torch.inference_mode():
        y = torch.softmax(model.eval()(torch.from_numpy(flat)), 1).numpy()
    crop = (slice(None), slice(None), *tuple(slice(h, h + s) for s in spatial))
    y = y[crop].reshape(*x.shape[:outer_n], model.n_classes, *spatial)
    return np.moveaxis(y, outer_n, 0)


@pytest.mark.parametrize("shape", [(97, 131), (64, 64), (33, 250), (5, 7)])
@pytest.mark.parametrize("tile", [16, 40, 72, (24, 56), 10_000])
def test_2d_equals_untiled_for_any_tile(small_unet, shape, tile):
    img = np.random.default_rng(1).random(shape, dtype=np.float32) * 1000
    ref = _untiled(img, small_unet, "YX")
    got = predict(img, small_unet, tile_size=tile, device="cpu")
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("border", [0, 16, 56, 1000])
def test_any_border_padding_is_exact(small_unet, border):
    img = np.random.default_rng(3).random((75, 90), dtype=np.float32)
    ref = _untiled(img, small_unet, "YX", border=border)
    for tile in (16, 40):
        got = predict(img, small_unet, tile_size=tile, border=border)
        np.testing.assert_allclose(got, ref, atol=1e-4)
    assert border_pad(small_unet, 1000) == small_unet.halo


@pytest.mark.parametrize(
    "arch,opts",
    [
        ("unet", {"upsampling": "bilinear"}),
        ("unet", {"upsampling": "bed_of_nails"}),
        ("deconvnet", {}),
        ("dilated", {"rates": [2, 3], "pool_size": 32, "pyramid": True}),
    ],
)
def test_other_architectures_tile_exactly(arch, opts):
    m = randomize_norm_stats(ns.build_model(arch, n_classes=2, width=4, depth=3, **opts))
    img = np.random.default_rng(2).random((83, 117), dtype=np.float32)
    ref = _untiled(img, m, "YX")
    for tile in (16, 48):
        np.testing.assert_allclose(predict(img, m, tile_size=tile), ref, atol=1e-4)


def test_3d_volume_exact():
    m = randomize_norm_stats(ns.build_model("unet", dims=3, n_classes=2, width=4, depth=2))
    vol = np.random.default_rng(3).random((21, 37, 30), dtype=np.float32)
    ref = _untiled(vol, m, "ZYX")
    for tile in (8, (16, 8, 24), 1000):
        np.testing.assert_allclose(predict(vol, m, axes="ZYX", tile_size=tile), ref, atol=1e-4)


@pytest.mark.parametrize(
    "axes,shape",
    [
        ("ZYX", (4, 45, 38)),
        ("TYX", (3, 45, 38)),
        ("TZYX", (2, 3, 45, 38)),
        ("YXZ", (45, 38, 3)),
        ("XY", (38, 45)),
    ],
)
def test_2d_model_over_stacks(small_unet, axes, shape):
    img = np.random.default_rng(4).random(shape, dtype=np.float32)
    got = predict(img, small_unet, axes=axes, tile_size=16)
    assert got.shape == (3, *shape)
    # Each slice equals the slice run alone (normalised like the stack).
    lay = make_layout(shape, axes, 2, 1)
    lo, hi = np.percentile(img, [1.0, 99.8]) if "T" not in axes else (None, None)
    sl = [0] * len(shape)
    for ax in lay.spatial:
        sl[ax] = slice(None)
    one = img[tuple(sl)]
    if "T" not in axes:
        one_n = (one - lo) / (hi - lo)
        spec = {"kind": "none"}
        small_unet.meta["normalization"] = spec
        try:
            ref = predict(
                one_n.astype(np.float32),
                small_unet,
                axes="".join(a for a in axes if a in "YX"),
                tile_size=1000,
            )
        finally:
            small_unet.meta["normalization"] = {"kind": "percentile", "low": 1.0, "high": 99.8}
        np.testing.assert_allclose(got[(slice(None), *sl)], ref, atol=1e-4)


def test_time_points_normalised_separately(small_unet):
    rng = np.random.default_rng(5)
    frame = rng.random((40, 40), dtype=np.float32)
    stack = np.stack([frame, frame * 10 + 5])  # bleaching-like change of scale
    got = predict(stack, small_unet, axes="TYX")
    np.testing.assert_allclose(got[:, 0], got[:, 1], atol=1e-4)


@pytest.mark.parametrize("axes", ["YXC", "CYX"])
def test_channels(axes):
    m = randomize_norm_stats(ns.build_model("unet", in_channels=2, n_classes=2, width=4, depth=2))
    rng = np.random.default_rng(6)
    img = rng.random((2, 50, 61), dtype=np.float32)
    data = img if axes == "CYX" else np.moveaxis(img, 0, -1).copy()
    got = predict(data, m, axes=axes, tile_size=16)
    ref = predict(img, m, axes="CYX", tile_size=1000)
    assert got.shape == (2, 50, 61)
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_axes_guessing_rule():
    assert guess_axes((100, 100)) == "YX"
    assert guess_axes((100, 100, 3)) == "YXC"
    assert guess_axes((10, 100, 100)) == "ZYX"
    assert guess_axes((2, 100, 100), in_channels=2) == "CYX"
    assert guess_axes((5, 10, 100, 100)) == "TZYX"
    assert guess_axes((10, 100, 100, 3)) == "ZYXC"


@pytest.mark.parametrize(
    "axes,shape,match",
    [
        ("YXX", (10, 10, 10), "repeats"),
        ("YQ", (10, 10), "unknown letters"),
        ("ZYX", (10, 10), "letters but the image has"),
        ("TZ", (10, 10), "must contain Y and X"),
        ("YXC", (20, 20, 3), "RGB"),
        ("YXC", (20, 20, 2), "expects 1"),
        (None, (0, 10), "empty"),
        (None, (10,), "1-dimensional|must contain"),
    ],
)
def test_bad_axes_and_shapes(small_unet, axes, shape, match):
    with pytest.raises(ns.SegNetError, match=match):
        predict(np.zeros(shape, np.float32), small_unet, axes=axes)


def test_3d_model_needs_z():
    m = ns.build_model("unet", dims=3, depth=1, width=2)
    with pytest.raises(ns.SegNetError, match="needs a Z axis"):
        predict(np.zeros((5, 20, 20)), m, axes="TYX")


def test_nan_and_bad_dtype(small_unet):
    img = np.ones((30, 30), np.float32)
    img[3, 4] = np.nan
    with pytest.raises(ns.SegNetError, match="NaN"):
        predict(img, small_unet)
    with pytest.raises(ns.SegNetError, match="dtype"):
        predict(np.array([["a"] * 4] * 4), small_unet)
    with pytest.raises(ns.SegNetError, match="tile_size"):
        predict(np.ones((30, 30)), small_unet, tile_size=(8, 8, 8))


def test_input_never_modified(small_unet):
    img = (np.random.default_rng(7).random((60, 70)) * 4000).astype(np.uint16)
    before = img.copy()
    img.setflags(write=False)
    predict(img, small_unet, tile_size=16)
    segment(img, small_unet, tile_size=16, instances=True)
    np.testing.assert_array_equal(img, before)


def test_model_left_as_it_was(small_unet):
    small_unet.train()
    state = {k: v.clone() for k, v in small_unet.state_dict().items()}
    predict(np.random.default_rng(0).random((40, 40)), small_unet)
    assert small_unet.training
    for k, v in small_unet.state_dict().items():
        assert torch.equal(v, state[k])


def test_progress_monotone_and_complete(small_unet):
    calls = []
    predict(
        np.random.default_rng(0).random((90, 90)),
        small_unet,
        tile_size=16,
        batch_size=3,
        progress=lambda d, n: calls.append((d, n)),
    )
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == calls[-1][1]
    assert calls[-1][1] == 36  # 6 x 6 tiles


def test_cancel_stops_promptly(small_unet, tmp_path):
    ev = threading.Event()
    seen = []

    def progress(d, n):
        seen.append(d)
        if d >= 2:
            ev.set()

    with pytest.raises(ns.Cancelled):
        predict(
            np.random.default_rng(0).random((200, 200)),
            small_unet,
            tile_size=16,
            batch_size=1,
            progress=progress,
            cancel=ev,
        )
    assert max(seen) <= 3
    # A zarr store created for the job does not survive as if it were whole.
    ev2 = threading.Event()
    ev2.set()
    out = tmp_path / "res.zarr"
    with pytest.raises(ns.Cancelled):
        segment(
            np.random.default_rng(0).random((100, 100)),
            small_unet,
            tile_size=16,
            output=str(out),
            cancel=ev2,
        )
    assert not out.exists()


def test_dask_and_zarr_inputs_equal_numpy(small_unet, tmp_path):
    import zarr

    img = np.random.default_rng(8).random((3, 70, 90), dtype=np.float32)
    ref = predict(img, small_unet, axes="ZYX", tile_size=1000)
    z = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=img.shape, chunks=(1, 32, 32), dtype="f4"
    )
    z[...] = img
    np.testing.assert_allclose(predict(z, small_unet, axes="ZYX", tile_size=24), ref, atol=1e-4)
    d = da.from_array(img, chunks=(1, 30, 40))
    np.testing.assert_allclose(predict(d, small_unet, axes="ZYX", tile_size=24), ref, atol=1e-4)
    lazy = predict_dask(d, small_unet, axes="ZYX", chunk_size=32)
    assert isinstance(lazy, da.Array) and lazy.shape == ref.shape
    np.testing.assert_allclose(lazy.compute(), ref, atol=1e-4)


def test_distributed_cluster_equals_numpy(small_unet):
    distributed = pytest.importorskip("distributed")
    img = np.random.default_rng(9).random((150, 130), dtype=np.float32)
    ref = predict(img, small_unet, tile_size=1000)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = predict_dask(da.from_array(img, chunks=64), small_unet, chunk_size=64)
        got = client.compute(lazy).result()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_segment_to_zarr_tile_by_tile(small_unet, tmp_path):
    import zarr

    img = np.random.default_rng(10).random((120, 100), dtype=np.float32)
    mem = segment(img, small_unet, instances=True)
    res = segment(img, small_unet, tile_size=32, output=str(tmp_path / "o.zarr"), instances=True)
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert g.attrs["napari_segnet_complete"] is True
    np.testing.assert_allclose(g["probabilities"][...], mem.probabilities, atol=1e-4)
    np.testing.assert_array_equal(g["semantic"][...], mem.semantic)
    np.testing.assert_array_equal(np.asarray(res.instances), mem.instances)
    with pytest.raises(ns.SegNetError, match="exists"):
        segment(img, small_unet, output=str(tmp_path / "o.zarr"))


def test_segment_outputs(small_unet):
    img = np.random.default_rng(11).random((2, 50, 40), dtype=np.float32)
    res = segment(img, small_unet, axes="TYX")
    assert res.probabilities.shape == (3, 2, 50, 40)
    assert res.semantic.shape == (2, 50, 40) and res.semantic.dtype == np.uint8
    np.testing.assert_array_equal(res.semantic, res.probabilities.argmax(0))
    assert res.instances is None and res.axes == "TYX"


def test_diameter_rescales_and_restores_shape(small_unet):
    small_unet.meta["diameter"] = 20.0
    img = np.random.default_rng(12).random((90, 70), dtype=np.float32)
    res = segment(img, small_unet, diameter=40.0, instances=True)
    assert res.probabilities.shape == (3, 90, 70)
    assert res.semantic.shape == (90, 70) and res.instances.shape == (90, 70)
    assert res.info["n_tiles"] >= 1
    # Equivalent to running on the half-size image and resizing back.
    from skimage.transform import resize

    small = resize(img, (45, 35), order=1, preserve_range=True, anti_aliasing=True)
    p_small = predict(small.astype(np.float32), small_unet)
    back = resize(p_small, (3, 90, 70), order=1, preserve_range=True)
    np.testing.assert_allclose(res.probabilities, back, atol=1e-3)
    with pytest.raises(ns.SegNetError, match="diameter must be positive"):
        segment(img, small_unet, diameter=-1)
    small_unet.meta["diameter"] = None
    with pytest.raises(ns.SegNetError, match="no training object diameter"):
        segment(img, small_unet, diameter=30)


def test_mirror_index_matches_numpy_reflect():
    for n in (1, 2, 5):
        idx = np.arange(-13, n + 13)
        expected = np.pad(np.arange(n), 13, mode="reflect") if n > 1 else np.zeros(n + 26, int)
        np.testing.assert_array_equal(mirror_index(idx, n), expected)


def test_auto_tile_covers_image(small_unet):
    img = np.random.default_rng(13).random((300, 200), dtype=np.float32)
    res = segment(img, small_unet)
    assert res.info["n_tiles"] == 1  # a small image fits one tile on the CPU
    np.testing.assert_allclose(res.probabilities, _untiled(img, small_unet, "YX"), atol=1e-4)


def test_read_region_mirrors_like_index_arithmetic():
    # The slice-and-pad fast path and the general path must agree for any region.
    rng = np.random.default_rng(0)
    for _ in range(500):
        n0, n1 = (int(v) for v in rng.integers(1, 40, 2))
        img = rng.integers(0, 1000, (n0, n1)).astype(np.uint16)
        layout = make_layout(img.shape, "YX", 2, 1)
        lo = tuple(int(v) for v in rng.integers(-30, 30, 2))
        hi = tuple(int(a + rng.integers(1, 60)) for a in lo)
        got = read_region(img, layout, (), lo, hi)[0]
        rows = mirror_index(np.arange(lo[0], hi[0]), n0)
        cols = mirror_index(np.arange(lo[1], hi[1]), n1)
        np.testing.assert_array_equal(got, img[np.ix_(rows, cols)])


def test_out_of_memory_halves_batch_then_tile(small_unet, monkeypatch):
    # Simulated CUDA out-of-memory for batches of more than one tile and for tiles
    # larger than 48 px: the engine must halve the batch, then the tile, and still
    # give the exact result.
    forward = type(small_unet).forward
    seen = []

    def tight(self, x):
        seen.append(tuple(x.shape))
        if x.shape[0] > 1 or max(x.shape[2:]) > 48 + 2 * small_unet.halo:
            raise torch.cuda.OutOfMemoryError("simulated")
        return forward(self, x)

    img = np.random.default_rng(4).random((90, 70), dtype=np.float32)
    ref = _untiled(img, small_unet, "YX")
    monkeypatch.setattr(type(small_unet), "forward", tight)
    got = predict(img, small_unet, tile_size=64, batch_size=4)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert any(s[0] == 4 for s in seen) and seen[-1][0] == 1


def test_uint16_input_is_read_as_unsigned(small_unet):
    # uint16 travels as its int16 bit pattern; values above 32767 must stay large.
    img = np.random.default_rng(5).integers(30_000, 65_535, (60, 50)).astype(np.uint16)
    ref = _untiled(img.astype(np.float32), small_unet, "YX")
    np.testing.assert_allclose(predict(img, small_unet, tile_size=24), ref, atol=1e-4)


@pytest.fixture
def no_tf32():
    # float32 on CUDA means true float32 here, so results compare with the CPU at 1e-4.
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.parametrize("tile,batch", [(16, 1), (16, 3), (40, None), (10_000, None)])
def test_cuda_float32_equals_cpu_untiled(small_unet, no_tf32, tile, batch):
    img = (np.random.default_rng(6).random((97, 131)) * 60_000).astype(np.uint16)
    ref = _untiled(img.astype(np.float32), small_unet, "YX")
    got = ns.predict(
        img, small_unet, device="cuda", precision="float32", tile_size=tile, batch_size=batch
    )
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.gpu
def test_cuda_autocast_close_to_float32(small_unet):
    img = np.random.default_rng(7).random((3, 120, 90), dtype=np.float32)
    ref = predict(img, small_unet, axes="ZYX")
    got = ns.predict(img, small_unet, axes="ZYX", device="cuda", tile_size=32, batch_size=4)
    np.testing.assert_allclose(got, ref, atol=2e-2)
    assert (got.argmax(0) == ref.argmax(0)).mean() > 0.98
    res = ns.segment(img, small_unet, axes="ZYX", device="cuda", tile_size=32, output=None)
    assert (res.semantic == ref.argmax(0)).mean() > 0.98


def test_tiles_stay_within_32_bit_indexing_on_a_large_device():
    from napari_segnet.engine.memory import (
        MAX_ELEMENTS,
        choose_core,
        tile_pixels,
        widest_activation_per_pixel,
    )

    model = ns.build_model("unet", n_classes=3, depth=2, width=32)
    shape = (16384, 16384)
    # 1 TiB of budget: memory alone would allow one tile for the whole image.
    core = choose_core(shape, model, 2**40, pad=32)
    pixels = tile_pixels(core, shape, model, 32)
    assert pixels * widest_activation_per_pixel(model) <= MAX_ELEMENTS
    assert max(core) < 16384
