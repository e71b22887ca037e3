"""bioimage.io packages: export validated by the reference tools, import through the engine."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import napari_segnet as ns
from napari_segnet.errors import ModelFileError, SegNetError

from .conftest import randomize_norm_stats

spec = pytest.importorskip("bioimageio.spec")
v05 = pytest.importorskip("bioimageio.spec.model.v0_5")


def _check_format(path: Path):
    """The package loads, with its files checked, and has no errors."""
    descr = spec.load_model_description(path, perform_io_checks=True)
    assert not isinstance(descr, spec.InvalidDescr), descr.validation_summary.format()
    assert descr.validation_summary.status == "valid-format"
    assert not [e for d in descr.validation_summary.details for e in d.errors]
    return descr


def _core_test(path: Path) -> None:
    """bioimageio.core's model test: the reference runner reproduces the test output."""
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(path)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    assert summary.status == "passed", failed


def _small(dims: int) -> ns.SegNet:
    model = ns.build_model("unet", dims=dims, depth=2, width=4, n_classes=3)
    return randomize_norm_stats(model).eval()


@pytest.mark.slow
def test_export_2d_passes_the_reference_tools_and_round_trips(tmp_path):
    model = _small(2)
    path = ns.export_bioimageio(model, tmp_path / "unet2d.zip", name="small unet")
    descr = _check_format(path)
    assert set(descr.weights.available_formats) == {"pytorch_state_dict", "torchscript"}
    out = descr.outputs[0]
    assert [getattr(a, "halo", 0) for a in out.axes if a.type == "space"] == [model.halo] * 2
    size = descr.inputs[0].axes[2].size
    assert (size.min, size.step) == (2 * model.halo + model.divisor, model.divisor)
    # the specification adds ensure_dtype steps of its own around ours
    steps = [p.id for p in descr.inputs[0].preprocessing if p.id != "ensure_dtype"]
    assert steps == ["scale_range"]
    assert [p.id for p in out.postprocessing if p.id != "ensure_dtype"] == ["softmax"]
    _core_test(path)

    again = ns.load_model(path)
    assert isinstance(again, type(model)) and again.config == model.config
    image, _ = ns.data.synthetic_nuclei((90, 130), seed=5)
    want = ns.segment(image, model, diameter=None, tile_size=40).probabilities
    got = ns.segment(image, again, diameter=None, tile_size=40).probabilities
    assert np.abs(got - want).max() <= 1e-4


def test_export_3d_folder_validates_and_round_trips(tmp_path):
    model = _small(3)
    path = ns.export_bioimageio(model, tmp_path / "unet3d", weights=("pytorch_state_dict",))
    assert (path / "rdf.yaml").is_file()
    descr = _check_format(path)
    assert [a.type for a in descr.inputs[0].axes] == ["batch", "channel", "space", "space", "space"]
    _core_test(path)
    again = ns.load_model(path)
    image, _ = ns.data.synthetic_nuclei((12, 40, 36), seed=2, diameter=8)
    want = ns.predict(image, model, "ZYX", tile_size=(12, 20, 20), border=0)
    got = ns.predict(image, again, "ZYX", tile_size=(12, 20, 20), border=0)
    assert np.abs(got - want).max() <= 1e-4


def test_package_test_output_is_the_network_on_the_test_input(tmp_path):
    """Computed independently: percentile normalisation, the network, a softmax."""
    model = _small(2)
    path = ns.export_bioimageio(model, tmp_path / "m.zip", weights=("torchscript",))
    with zipfile.ZipFile(path) as z:
        x = np.load(z.open("test_input.npy"))
        y = np.load(z.open("test_output.npy"))
    lo, hi = np.percentile(x, [1.0, 99.8])
    x = ((x - lo) / (hi - lo)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert np.abs(y - want).max() <= 1e-4


@pytest.mark.slow
def test_bundled_model_exports_and_passes_the_model_test(tmp_path):
    model = ns.load_model("nuclei")
    path = ns.export_bioimageio(model, tmp_path / "nuclei.zip", weights=("pytorch_state_dict",))
    descr = _check_format(path)
    assert [str(c) for c in descr.outputs[0].axes[1].channel_names] == [
        "background",
        "interior",
        "boundary",
    ]
    _core_test(path)
    image, _ = ns.data.synthetic_nuclei((300, 260), seed=9)
    again = ns.load_model(path)
    want = ns.segment(image, model, diameter=None).probabilities
    got = ns.segment(image, again, diameter=None).probabilities
    assert np.abs(got - want).max() <= 1e-4


# ---- a package napari-segnet did not write --------------------------------------------

FOREIGN_SOURCE = '''
import torch
from torch import nn


class TinyUNet(nn.Module):
    """Two levels, 'same' convolutions, a sigmoid-ready single output channel."""

    def __init__(self, channels=4):
        super().__init__()
        c = channels
        self.down = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU())
        self.bottom = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.head = nn.Conv2d(2 * c, 1, 1)

    def forward(self, x):
        d = self.down(x)
        b = self.bottom(nn.functional.max_pool2d(d, 2))
        return self.head(torch.cat([d, self.up(b)], dim=1))
'''


def _tiny_unet() -> nn.Module:
    scope: dict = {}
    exec(FOREIGN_SOURCE, scope)
    torch.manual_seed(3)
    return scope["TinyUNet"]().eval()


def _untiled(net: nn.Module, image: np.ndarray) -> np.ndarray:
    x = (image - image.mean()) / (image.std() + 1e-6)
    with torch.no_grad():
        return torch.sigmoid(net(torch.from_numpy(x[None, None].astype(np.float32)))).numpy()[0]


def _foreign_package(
    tmp_path: Path,
    *,
    halo: int = 8,
    weights: str = "pytorch_state_dict",
    test_output: np.ndarray | None = None,
    onnx_bytes: bytes | None = None,
) -> Path:
    """A package made the way the zoo's own tooling makes one: ``bioimageio.spec``'s build API."""
    net = _tiny_unet()
    src = tmp_path / "tiny_unet.py"
    src.write_text(FOREIGN_SOURCE)
    rng = np.random.default_rng(0)
    x = rng.normal(100.0, 20.0, (64, 64)).astype(np.float32)
    np.save(tmp_path / "in.npy", x[None, None])
    y = _untiled(net, x) if test_output is None else test_output
    np.save(tmp_path / "out.npy", y[None])
    (tmp_path / "README.md").write_text("# Tiny\n\n## Validation\n\nNone.\n")
    if weights == "pytorch_state_dict":
        torch.save(net.state_dict(), tmp_path / "w.pt")
        entry = v05.PytorchStateDictWeightsDescr(
            source=tmp_path / "w.pt",
            architecture=v05.ArchitectureFromFileDescr(
                source=src, callable=v05.Identifier("TinyUNet"), kwargs={"channels": 4}
            ),
            pytorch_version=v05.Version("2.1"),
        )
    elif weights == "torchscript":
        torch.jit.trace(net, torch.zeros(1, 1, 32, 32)).save(str(tmp_path / "w.pt"))
        entry = v05.TorchscriptWeightsDescr(
            source=tmp_path / "w.pt", pytorch_version=v05.Version("2.1")
        )
    elif weights == "onnx":
        if onnx_bytes is None:
            pytest.importorskip("onnx")  # torch writes ONNX with it
            torch.onnx.export(
                net,
                (torch.zeros(1, 1, 32, 32),),
                str(tmp_path / "w.onnx"),
                dynamo=False,
                opset_version=17,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}},
            )
        else:
            (tmp_path / "w.onnx").write_bytes(onnx_bytes)
        entry = v05.OnnxWeightsDescr(source=tmp_path / "w.onnx", opset_version=17)
    else:
        (tmp_path / "w.zip").write_bytes(b"not really a saved model")
        entry = v05.TensorflowSavedModelBundleWeightsDescr(
            source=tmp_path / "w.zip", tensorflow_version=v05.Version("2.15")
        )
    grid = v05.ParameterizedSize(min=32, step=4)
    space_in = [v05.SpaceInputAxis(id=v05.AxisId(a), size=grid) for a in "yx"]
    out_cls = v05.SpaceOutputAxisWithHalo if halo else v05.SpaceOutputAxis
    space_out = [
        out_cls(
            id=v05.AxisId(a),
            size=v05.SizeReference(tensor_id=v05.TensorId("image"), axis_id=v05.AxisId(a)),
            **({"halo": halo} if halo else {}),
        )
        for a in "yx"
    ]
    descr = v05.ModelDescr(
        name="tiny foreign unet",
        description="a UNet from another code base",
        authors=[v05.Author(name="Someone Else")],
        cite=[v05.CiteEntry(text="A paper", doi=v05.Doi("10.1007/978-3-319-24574-4_28"))],
        license="MIT",
        documentation=v05.FileDescr(source=tmp_path / "README.md"),
        inputs=[
            v05.InputTensorDescr(
                id=v05.TensorId("image"),
                axes=[v05.BatchAxis(), v05.ChannelAxis(channel_names=["raw"]), *space_in],
                test_tensor=v05.FileDescr(source=tmp_path / "in.npy"),
                preprocessing=[
                    v05.ZeroMeanUnitVarianceDescr(
                        kwargs=v05.ZeroMeanUnitVarianceKwargs(
                            axes=(v05.AxisId("y"), v05.AxisId("x"))
                        )
                    )
                ],
            )
        ],
        outputs=[
            v05.OutputTensorDescr(
                id=v05.TensorId("mask"),
                axes=[v05.BatchAxis(), v05.ChannelAxis(channel_names=["cells"]), *space_out],
                test_tensor=v05.FileDescr(source=tmp_path / "out.npy"),
                postprocessing=[v05.SigmoidDescr()],
            )
        ],
        weights=v05.WeightsDescr(**{weights: entry}),
    )
    out = tmp_path / "foreign.zip"
    spec.save_bioimageio_package(descr, output_path=out)
    return out


@pytest.mark.parametrize("halo", [8, 0], ids=["package-halo", "measured-halo"])
def test_foreign_package_tiled_equals_its_untiled_forward(tmp_path, halo):
    path = _foreign_package(tmp_path, halo=halo)
    model = ns.load_model(path, trust_code=True)
    # two 3x3 convolutions at full and one at half resolution: radius 1 + 1 + 2 * 1 (+1)
    assert model.halo >= 4 and model.divisor == 4
    image = np.random.default_rng(1).normal(50.0, 10.0, (96, 120)).astype(np.float32)
    tiled = ns.predict(image, model, "YX", tile_size=24, border=0)
    assert np.abs(tiled - _untiled(_tiny_unet(), image)).max() <= 1e-5
    res = ns.segment(image, model, "YX", tile_size=24, diameter=None)
    assert res.probabilities.shape == (1, 96, 120)
    assert np.array_equal(res.semantic, res.probabilities[0] > 0.5)


def test_foreign_torchscript_needs_no_trust(tmp_path):
    model = ns.load_model(_foreign_package(tmp_path, weights="torchscript"))
    image = np.random.default_rng(2).normal(50.0, 10.0, (40, 52)).astype(np.float32)
    got = ns.predict(image, model, "YX", tile_size=16, border=0)
    assert np.abs(got - _untiled(_tiny_unet(), image)).max() <= 1e-5


def test_code_in_a_package_runs_only_when_trusted(tmp_path):
    with pytest.raises(ModelFileError, match="trust_code=True"):
        ns.load_model(_foreign_package(tmp_path))


def test_tensorflow_package_names_the_supported_formats(tmp_path):
    with pytest.raises(
        ModelFileError, match=r"\['tensorflow_saved_model_bundle'\] only.*torchscript.*onnx"
    ):
        ns.load_model(_foreign_package(tmp_path, weights="tensorflow_saved_model_bundle"))


@pytest.mark.parametrize("halo", [8, 0], ids=["package-halo", "measured-halo"])
def test_foreign_onnx_package_runs_through_onnxruntime_without_trust(tmp_path, halo):
    pytest.importorskip("onnxruntime")
    model = ns.load_model(_foreign_package(tmp_path, weights="onnx", halo=halo))
    assert model.halo >= 4 and model.divisor == 4
    image = np.random.default_rng(4).normal(50.0, 10.0, (72, 100)).astype(np.float32)
    tiled = ns.predict(image, model, "YX", tile_size=24, border=0)
    assert np.abs(tiled - _untiled(_tiny_unet(), image)).max() <= 1e-5


def test_onnx_package_without_onnxruntime_says_how_to_install(tmp_path, monkeypatch):
    path = _foreign_package(tmp_path, weights="onnx", onnx_bytes=b"not an onnx graph")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it fails
    with pytest.raises(ModelFileError, match=r"ONNX weights.*napari-segnet\[onnx\]"):
        ns.load_model(path)


def test_broken_onnx_weights_are_a_clear_error(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _foreign_package(tmp_path, weights="onnx", onnx_bytes=b"not an onnx graph")
    with pytest.raises(ModelFileError, match="ONNX weights cannot be read"):
        ns.load_model(path)


def _bad_packages(tmp_path: Path) -> dict[str, Path]:
    """One of each kind of bad input, each in a folder of its own."""
    bad = {}
    for kind in ("not a package", "wrong sha256", "does not reproduce", "tensorflow only"):
        folder = tmp_path / kind.replace(" ", "_")
        folder.mkdir(parents=True)
        if kind == "not a package":
            bad[kind] = folder / "photos.zip"
            with zipfile.ZipFile(bad[kind], "w") as z:
                z.writestr("a.txt", "hello")
        elif kind == "wrong sha256":
            good = _foreign_package(folder, weights="torchscript")
            bad[kind] = folder / "bad.zip"
            with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad[kind], "w") as dst:
                for item in src.infolist():
                    data = src.read(item)
                    dst.writestr(item, data + b"\0" if item.filename == "w.pt" else data)
        elif kind == "does not reproduce":
            wrong = np.full((1, 64, 64), 0.5, np.float32)
            bad[kind] = _foreign_package(folder, weights="torchscript", test_output=wrong)
        else:
            bad[kind] = _foreign_package(folder, weights="tensorflow_saved_model_bundle")
    return bad


def test_cli_refuses_each_bad_package_and_writes_nothing(tmp_path, capsys):
    from napari_segnet.cli import main

    expected = {
        "not a package": "not a bioimage.io package",
        "wrong sha256": "sha256",
        "does not reproduce": "does not reproduce",
        "tensorflow only": "runs ['torchscript', 'pytorch_state_dict', 'onnx']",
    }
    for kind, path in _bad_packages(tmp_path / "in").items():
        out = tmp_path / "out"
        argv = ["segment", "--model", str(path), "--sample", "nuclei", "--out", str(out)]
        assert main([*argv, "--trust-code"]) == 2, kind
        assert expected[kind] in capsys.readouterr().err.replace("SHA256", "sha256"), kind
        assert not out.exists(), kind


def test_package_whose_test_output_does_not_reproduce(tmp_path):
    path = _foreign_package(tmp_path, test_output=np.full((1, 64, 64), 0.5, np.float32))
    with pytest.raises(ModelFileError, match="does not reproduce"):
        ns.load_model(path, trust_code=True)


def test_zip_that_is_not_a_package(tmp_path):
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "hello")
    with pytest.raises(ModelFileError, match=r"not a bioimage.io package"):
        ns.load_bioimageio(path)


def test_package_with_a_wrong_sha256(tmp_path):
    path = ns.export_bioimageio(_small(2), tmp_path / "m.zip", weights=("torchscript",))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "test_output.npy":
                data = data[:-4] + b"\0\0\0\0"
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match=r"sha256|SHA256"):
        ns.load_model(bad)


def test_failed_export_writes_nothing(tmp_path):
    target = tmp_path / "m.zip"
    with pytest.raises(SegNetError, match="at least"):
        ns.export_bioimageio(_small(2), target, test_image=np.zeros((20, 20)))
    with pytest.raises(SegNetError, match="weight format"):
        ns.export_bioimageio(_small(2), target, weights=("onnx",))
    with pytest.raises(SegNetError, match="SPDX"):
        ns.export_bioimageio(_small(2), target, license="my own licence")
    with pytest.raises(SegNetError, match="not be valid: orcid"):
        ns.export_bioimageio(
            _small(2), target, authors=[{"name": "A", "orcid": "0000"}], weights=("torchscript",)
        )
    assert list(tmp_path.iterdir()) == []


def test_existing_package_is_kept_without_overwrite(tmp_path):
    target = tmp_path / "m.zip"
    target.write_bytes(b"keep me")
    with pytest.raises(ModelFileError, match="overwrite"):
        ns.export_bioimageio(_small(2), target)
    assert target.read_bytes() == b"keep me"


def test_imported_foreign_model_is_not_saved_as_native(tmp_path):
    model = ns.load_model(_foreign_package(tmp_path, weights="torchscript"))
    with pytest.raises(ns.NotAModelError):
        ns.save_model(model, tmp_path / "x.segnet")
    with pytest.raises(ns.NotAModelError):
        ns.export_bioimageio(model, tmp_path / "x.zip")


def test_cli_exports_a_package_that_segments_through_the_cli(tmp_path):
    from napari_segnet.cli import main

    model = _small(2)
    ns.save_model(model, tmp_path / "m.segnet")
    package = tmp_path / "m.zip"
    assert main(["export-bioimageio", str(tmp_path / "m.segnet"), str(package)]) == 0
    _check_format(package)
    assert main(["export-bioimageio", str(tmp_path / "m.segnet"), str(package)]) == 2
    out = tmp_path / "out"
    code = main(["segment", "--model", str(package), "--sample", "nuclei", "--out", str(out)])
    assert code == 0 and any(out.glob("*_semantic.tif"))


def test_native_models_need_no_bioimageio_and_packages_say_how_to_install(tmp_path):
    """The plain install: bioimageio.spec hidden, native models work, packages explain."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["bioimageio"] = None  # as if not installed: importing it fails
        import numpy as np
        import napari_segnet as ns
        m = ns.build_model("unet", depth=2, width=4, n_classes=3)
        ns.save_model(m, {str(tmp_path / "m.segnet")!r})
        m = ns.load_model({str(tmp_path / "m.segnet")!r})
        ns.segment(np.zeros((64, 64), np.float32), m, diameter=None)
        try:
            ns.export_bioimageio(m, {str(tmp_path / "m.zip")!r})
        except ns.SegNetError as e:
            print(e)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'napari-segnet[bioimageio]'" in done.stdout
    assert not (tmp_path / "m.zip").exists()
