"""The network zoo: shapes, halo/divisor verified by perturbation, safe model files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import napari_segnet as ns
from napari_segnet.models import UPSAMPLING
from napari_segnet.models.layers import box_mean

from .conftest import randomize_norm_stats

CONFIGS = (
    [("unet", {"upsampling": u}) for u in UPSAMPLING]
    + [("unet", {"norm": "group", "residual": True, "dropout": 0.2})]
    + [("unet", {"norm": "none"})]
    + [("deconvnet", {})]
    + [
        ("dilated", {"rates": [2, 3], "pool_size": 32}),
        ("dilated", {"output_stride": 1, "depth": 2, "rates": [2, 4], "pool_size": 16}),
        ("dilated", {"pyramid": True, "context": True, "aspp": False, "pool_size": 32}),
        ("dilated", {"output_stride": 16, "pyramid": True, "pool_size": 64}),
    ]
)


def _build(arch, opts, dims, **kw):
    base = {"depth": 3 if arch != "dilated" else 4, "width": 4}
    if dims == 3 and arch != "dilated":
        base["depth"] = 2
    base.update(opts)
    if dims == 3 and arch == "dilated":
        # Keep 3D receptive fields (and so test tiles) small.
        base.update(
            output_stride=min(base.get("output_stride", 8), 2), depth=2, rates=[1, 2], pool_size=8
        )
    base.update(kw)
    return randomize_norm_stats(ns.build_model(arch, dims=dims, n_classes=3, **base))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("arch", "opts"), CONFIGS, ids=lambda v: str(v))
def test_builds_and_predicts_odd_sizes(arch, opts, dims):
    model = _build(arch, opts, dims)
    assert json.loads(json.dumps(model.config))["arch"] == arch
    assert model.halo % model.divisor == 0 and model.halo >= model.receptive_radius
    shape = (37, 29) if dims == 2 else (11, 19, 13)
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
    prob = ns.predict(img, model, device="cpu")
    assert prob.shape == (3, *shape) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)
    # Forward pass on a multiple of the divisor keeps the size.
    side = 2 * model.divisor
    out = model(torch.zeros((1, 1) + (side,) * dims))
    assert out.shape == (1, 3) + (side,) * dims


def _perturb_outside(model, dims: int) -> None:
    """Changing every input farther than the receptive radius leaves the centre output alone."""
    r, d = model.receptive_radius, model.divisor
    n = int(np.ceil((2 * r + 2 * d + 1) / d) * d)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 1) + (n,) * dims, generator=g)
    c = n // 2
    grids = torch.meshgrid(*[torch.arange(n)] * dims, indexing="ij")
    far = torch.stack([(gi - c).abs() for gi in grids]).amax(0) > r
    x2 = x.clone()
    x2[0, 0][far] = torch.randn(int(far.sum()), generator=g) * 3
    with torch.inference_mode():
        y, y2 = model(x), model(x2)
    centre = (slice(None), slice(None)) + (c,) * dims
    torch.testing.assert_close(y2[centre], y[centre], rtol=0, atol=1e-5)
    # And the radius is not vacuous: changing everything changes the centre.
    x3 = torch.randn_like(x)
    with torch.inference_mode():
        assert not torch.equal(model(x3)[centre], y[centre])


@pytest.mark.parametrize(("arch", "opts"), CONFIGS, ids=lambda v: str(v))
def test_receptive_radius_bounds_influence_2d(arch, opts):
    _perturb_outside(_build(arch, opts, 2), 2)


@pytest.mark.parametrize(
    ("arch", "opts"),
    [
        ("unet", {"upsampling": "max_unpool"}),
        ("unet", {"upsampling": "bilinear"}),
        ("deconvnet", {}),
        ("dilated", {"rates": [1, 2], "pool_size": 16, "depth": 3}),
    ],
    ids=str,
)
def test_receptive_radius_bounds_influence_3d(arch, opts):
    model = _build(arch, opts, 3, width=4)
    _perturb_outside(model, 3)


def test_skip_connections_concatenate():
    m = ns.build_model("unet", depth=2, width=8)
    # Decoder blocks take the upsampled and the encoder features side by side.
    assert m.dec[0].c1[0].in_channels == 2 * 16
    assert m.dec[1].c1[0].in_channels == 2 * 8


def test_bed_of_nails_and_box_mean():
    from napari_segnet.models.layers import bed_of_nails

    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = bed_of_nails(x)
    expected = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0.0]])
    torch.testing.assert_close(up[0, 0], expected)
    y = torch.rand(1, 2, 9, 7, dtype=torch.float64)
    got = box_mean(y, 5)
    ref = torch.empty_like(y)
    for i in range(9):
        for j in range(7):
            ref[..., i, j] = y[..., max(0, i - 2) : i + 3, max(0, j - 2) : j + 3].mean((-1, -2))
    torch.testing.assert_close(got, ref)


def test_deconvnet_has_no_skips_and_unpools():
    m = ns.build_model("deconvnet", depth=2, width=4)
    assert not any("skip" in n for n, _ in m.named_modules())
    assert isinstance(m.unpool, torch.nn.MaxUnpool2d)


def test_group_norm_tiles_exactly(tmp_path):
    m = ns.build_model("unet", norm="group", depth=2, width=8, n_classes=2)
    m.train()
    for _ in range(3):
        m(torch.randn(2, 1, 32, 32))
    m.eval()
    img = np.random.default_rng(1).random((70, 90), dtype=np.float32)
    a = ns.predict(img, m, tile_size=16, device="cpu")
    b = ns.predict(img, m, tile_size=512, device="cpu")
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "resnet"},
        {"arch": "unet", "dims": 4},
        {"arch": "unet", "upsampling": "cubic"},
        {"arch": "unet", "norm": "layer"},
        {"arch": "unet", "n_classes": 1},
        {"arch": "unet", "colour": 3},
        {"arch": "dilated", "output_stride": 32},
    ],
)
def test_bad_options_raise(kwargs):
    arch = kwargs.pop("arch")
    with pytest.raises(ValueError):
        ns.build_model(arch, **kwargs)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("folder", [False, True])
def test_save_load_round_trip_bit_exact(tmp_path, folder):
    m = _build("unet", {"upsampling": "max_unpool"}, 2)
    m.meta.update(classes=["bg", "interior", "boundary"], target="instances", diameter=17.0)
    m.history = {"loss": [1.0, 0.5]}
    path = tmp_path / ("model_dir/" if folder else "model.segnet")
    written = ns.save_model(m, str(path))
    loaded = ns.load_model(written)
    assert loaded.config == m.config
    assert loaded.meta["diameter"] == 17.0 and loaded.meta["target"] == "instances"
    assert loaded.history == {"loss": [1.0, 0.5]}
    sa, sb = m.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    x = torch.randn(1, 1, 48, 64)
    with torch.inference_mode():
        assert torch.equal(m(x), loaded(x))


def test_save_appends_suffix(tmp_path):
    p = ns.save_model(ns.build_model("unet", depth=1, width=2), tmp_path / "m")
    assert p.suffix == ".segnet" and p.exists()


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    _Evil.marker = marker
    for name in ("evil.segnet", "evil.pt", "evil.pkl"):
        p = tmp_path / name
        p.write_bytes(pickle.dumps({"state": _Evil()}))
        with pytest.raises(ns.ModelFileError, match="not a napari-segnet model"):
            ns.load_model(p)
    torch.save({"x": torch.zeros(2)}, tmp_path / "torch.pt")
    with pytest.raises(ns.ModelFileError):
        ns.load_model(tmp_path / "torch.pt")
    assert not marker.exists()


def test_corrupt_and_foreign_files(tmp_path):
    good = ns.save_model(ns.build_model("unet", depth=1, width=2), tmp_path / "good.segnet")
    data = good.read_bytes()
    (tmp_path / "trunc.segnet").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.segnet").write_bytes(b"")
    for name in ("trunc.segnet", "empty.segnet"):
        with pytest.raises(ns.ModelFileError):
            ns.load_model(tmp_path / name)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ns.ModelFileError, match="not a napari-segnet"):
        ns.load_model(tmp_path / "foreign.safetensors")
    with pytest.raises(ns.ModelFileError, match="neither a bundled model"):
        ns.load_model("no-such-model")


def test_wrong_weights_for_config(tmp_path):
    from safetensors.torch import save_file

    m = ns.build_model("unet", depth=1, width=2)
    head = {
        "format": "napari-segnet",
        "format_version": 1,
        "config": {**m.config, "width": 4},
        "meta": {},
        "history": {},
    }
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(state, str(tmp_path / "bad.segnet"), metadata={"napari_segnet": json.dumps(head)})
    with pytest.raises(ns.ModelFileError, match="do not match"):
        ns.load_model(tmp_path / "bad.segnet")
    head["format_version"] = 99
    save_file(state, str(tmp_path / "new.segnet"), metadata={"napari_segnet": json.dumps(head)})
    with pytest.raises(ns.ModelFileError, match="format version"):
        ns.load_model(tmp_path / "new.segnet")


def test_available_models_is_a_list():
    names = ns.available_models()
    assert isinstance(names, list)
    for n in names:
        assert isinstance(ns.load_model(n), ns.SegNet)


def _crafted_file(path, model, config=None, meta=None):
    import json

    from safetensors.torch import save_file

    head = {
        "format": "napari-segnet",
        "format_version": 1,
        "config": {**model.config, **(config or {})},
        "meta": {} if meta is None else meta,
        "history": {},
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"napari_segnet": json.dumps(head)})
    return path


@pytest.mark.parametrize(
    ("config", "meta", "word"),
    [
        ({"width": 10**6}, None, "width"),  # would ask for terabytes
        ({"depth": 60}, None, "depth"),
        ({"n_classes": 10**7}, None, "n_classes"),
        ({"in_channels": "3"}, None, "in_channels"),
        ({"width": 4}, None, "do not match"),  # shapes checked before building
        ({"arch": "transformer"}, None, "transformer"),
        (None, "a string", "meta"),
    ],
)
def test_crafted_model_files_are_refused_before_allocation(tmp_path, config, meta, word):
    import tracemalloc

    model = ns.build_model("unet", depth=1, width=2)
    path = _crafted_file(tmp_path / "crafted.segnet", model, config, meta)
    tracemalloc.start()
    with pytest.raises(ns.ModelFileError, match=word):
        ns.load_model(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20


@pytest.mark.parametrize("value", [123, None, 1.5])
def test_load_model_says_what_it_takes(value):
    with pytest.raises(ns.ModelFileError, match="name or a model file"):
        ns.load_model(value)


def test_saving_never_replaces_a_model_without_overwrite(tmp_path):

    first = ns.build_model("unet", depth=1, width=2)
    second = ns.build_model("unet", depth=1, width=3)
    path = ns.save_model(first, tmp_path / "m.segnet")
    before = path.read_bytes()
    with pytest.raises(ns.ModelFileError, match="overwrite=True"):
        ns.save_model(second, path)
    assert path.read_bytes() == before
    ns.save_model(second, path, overwrite=True)
    assert ns.load_model(path).config["width"] == 3
    for bad in ("", "   ", None):
        with pytest.raises(ns.ModelFileError, match="needs a file path"):
            ns.save_model(first, bad)
    # A place that cannot be written: a clear error.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ns.ModelFileError, match="cannot write"):
        ns.save_model(first, blocker / "m.segnet")


def test_a_failed_write_leaves_the_old_model_and_no_partial_file(tmp_path, monkeypatch):
    from napari_segnet.io import model_files

    path = ns.save_model(ns.build_model("unet", depth=1, width=2), tmp_path / "m.segnet")
    before = path.read_bytes()

    def disk_full(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_files, "save_file", disk_full)
    with pytest.raises(ns.ModelFileError, match="No space left"):
        ns.save_model(ns.build_model("unet", depth=1, width=3), path, overwrite=True)
    assert path.read_bytes() == before
    leftovers = [f.name for f in tmp_path.rglob("*") if ".partial" in f.name]
    assert leftovers == []
