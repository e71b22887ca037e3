"""Reading a bioimage.io model package into a model the tiling engine runs.

Packages written by napari-segnet are rebuilt from their recorded config with this
package's own networks, and their state dict is read with ``torch.load(...,
weights_only=True)`` (a restricted unpickler that builds tensors only). Other packages
run as :class:`~napari_segnet.models.package.PackageNet`: TorchScript is preferred (it
runs in TorchScript's interpreter, not Python); a state dict whose architecture is
Python code runs that code, so it needs ``trust_code=True``.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelFileError
from ..models.base import SegNet
from ..models.package import PackageNet, receptive_radius
from ..models.registry import build_from_config
from .bioimageio_export import CONFIG_KEY, require_spec
from .bioimageio_onnx import INSTALL, OnnxModule
from .bioimageio_ops import normalization_and_ops, postprocessing_ops
from .model_files import FORMAT, FORMAT_VERSION, check_header

SUPPORTED = ("torchscript", "pytorch_state_dict", "onnx")
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a bioimage.io package: a zip, folder or yaml with an rdf."""
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in RDF_NAMES) or any(p.glob("*.bioimageio.yaml"))
    if p.suffix in (".yaml", ".yml"):
        return p.is_file()
    if p.suffix == ".zip" and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            return any(n in RDF_NAMES or n.endswith(".bioimageio.yaml") for n in z.namelist())
    return False


def _errors(descr) -> str:
    summary = descr.validation_summary
    msgs = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in summary.details for e in d.errors]
    return "; ".join(msgs[:3]) or summary.status


def describe(path: str | os.PathLike):
    """The package's validated description (format 0.5), its files checked against their sha256.

    Nothing is downloaded: a package that refers to remote files is refused before
    any file is read.
    """
    spec = require_spec()
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"no bioimage.io package at {p}")
    if p.suffix == ".zip" and not is_package(p):
        raise ModelFileError(f"{p} is a zip file but not a bioimage.io package (no rdf.yaml)")
    source = str(p / next(n for n in RDF_NAMES if (p / n).is_file())) if p.is_dir() else str(p)
    first = spec.load_description(source, perform_io_checks=False, format_version="latest")
    if isinstance(first, spec.InvalidDescr):
        raise ModelFileError(f"{p} is not a valid bioimage.io package: {_errors(first)}")
    if first.type != "model":
        raise ModelFileError(f"{p} describes a bioimage.io {first.type}, not a model")
    remote = [
        str(f.source)
        for f in (*first.weights.available_formats.values(), *first.inputs, *first.outputs)
        for f in ([f] if hasattr(f, "source") else [f.test_tensor])
        if str(f.source).startswith(("http://", "https://"))
    ]
    if remote:
        raise ModelFileError(
            f"{p} refers to files on the web ({remote[0]}); napari-segnet never downloads: "
            "use the package's zip file"
        )
    descr = spec.load_description(source, perform_io_checks=True, format_version="latest")
    if isinstance(descr, spec.InvalidDescr):
        raise ModelFileError(f"{p} is not a valid bioimage.io package: {_errors(descr)}")
    return descr


def _read(file_descr) -> bytes:
    return file_descr.get_reader().read()


def _state_dict(entry) -> dict[str, torch.Tensor]:
    try:
        # weights_only: a restricted unpickler that builds tensors and containers only.
        return torch.load(io.BytesIO(_read(entry)), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"the package's state dict cannot be read safely: {e}") from None


def _native(descr, own: dict[str, Any], where: str) -> SegNet:
    """A package napari-segnet wrote: its own network rebuilt from the recorded config."""
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, **own}
    model = build_from_config(check_header(head, where))
    try:
        model.load_state_dict(_state_dict(descr.weights.pytorch_state_dict), strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{where}: the weights do not match the config: {e}") from None
    model.meta.update(own.get("meta") or {})
    return model


def _foreign_net(descr, trust_code: bool, where: str) -> torch.nn.Module:
    weights = descr.weights
    if weights.torchscript is not None:
        try:
            return torch.jit.load(io.BytesIO(_read(weights.torchscript)), map_location="cpu")
        except RuntimeError as e:
            raise ModelFileError(f"{where}: the TorchScript weights cannot be read: {e}") from None
    entry = weights.pytorch_state_dict
    if weights.onnx is not None and (entry is None or not trust_code):
        # An ONNX graph is data for onnxruntime: no code of the package runs.
        return OnnxModule(_read(weights.onnx), where)
    if entry is None:
        found = sorted(weights.available_formats)
        raise ModelFileError(
            f"{where} has weights for {found} only; napari-segnet runs {list(SUPPORTED)} "
            f"(onnx with onnxruntime: {INSTALL})"
        )
    if not trust_code:
        raise ModelFileError(
            f"{where}: its network is defined by Python code in the package, and loading it "
            "runs that code; do so only for packages you trust, with trust_code=True "
            "(command line: --trust-code; Segment panel: 'trust code in this package')"
        )
    arch = entry.architecture
    if hasattr(arch, "import_from"):
        build = getattr(importlib.import_module(arch.import_from), str(arch.callable))
    else:
        module = types.ModuleType("bioimageio_architecture")
        exec(compile(_read(arch).decode("utf-8"), str(arch.source), "exec"), module.__dict__)
        build = getattr(module, str(arch.callable))
    net = build(**arch.kwargs)
    net.load_state_dict(_state_dict(entry), strict=entry.strict)
    return net


def _geometry(descr, where: str) -> dict[str, Any]:
    """Axes, channels, size grid and halo of the single input and output tensor."""
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelFileError(
            f"{where} has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; "
            "napari-segnet runs packages with one of each"
        )
    inp, out = descr.inputs[0], descr.outputs[0]
    mins, steps, in_axes = [], [], []
    in_channels = n_classes = 1
    for a in inp.axes:
        in_axes.append(str(a.id))
        if a.type == "channel":
            in_channels = len(a.channel_names)
        elif a.type == "space":
            if not hasattr(a.size, "step"):
                raise ModelFileError(
                    f"{where}: input axis {a.id} has a fixed or referenced size; "
                    "tiling needs a size grid (min + n * step)"
                )
            mins.append(int(a.size.min))
            steps.append(int(a.size.step))
        elif a.type != "batch":
            raise ModelFileError(f"{where}: input axis {a.id} of type {a.type} is not supported")
    halo, out_axes, classes = 0, [], ["foreground"]
    for a in out.axes:
        out_axes.append(str(a.id))
        if a.type == "channel":
            classes = [str(c) for c in a.channel_names]
            n_classes = len(classes)
        elif a.type == "space":
            ref = a.size
            if not hasattr(ref, "axis_id") or ref.offset != 0 or str(ref.axis_id) != str(a.id):
                raise ModelFileError(
                    f"{where}: output axis {a.id} must have the input's size (same axis, "
                    "no offset) to be tiled"
                )
            halo = max(halo, int(getattr(a, "halo", 0) or 0))
    dims = len(mins)
    if dims not in (2, 3):
        raise ModelFileError(f"{where}: {dims} spatial axes; napari-segnet runs 2D and 3D models")
    step = math.lcm(*steps)
    return {
        "dims": dims,
        "in_channels": in_channels,
        "n_classes": n_classes,
        "in_axes": in_axes,
        "out_axes": out_axes,
        "minimum": max(mins),
        "step": step,
        "halo": halo,
        "classes": classes,
    }


def _measure_halo(model: PackageNet) -> int:
    """The receptive-field radius, on inputs grown until the field fits inside."""
    size = model._valid(64)
    limit = 512 if model.dims == 2 else 128
    # onnxruntime has no gradients: there, which outputs a change of the input moves.
    by = "perturbation" if isinstance(model.net, OnnxModule) else "gradient"
    while True:
        r = receptive_radius(model, model.in_channels, model.dims, size, model.divisor, by=by)
        if 2 * r + 2 < size or size >= limit:
            return r
        size = model._valid(2 * size)


def load_bioimageio(
    path: str | os.PathLike,
    *,
    trust_code: bool = False,
    device: str | torch.device = "cpu",
    check: bool = True,
) -> SegNet:
    """Load a bioimage.io model package (``.zip``, folder or ``rdf.yaml``) as a model.

    The package is validated with ``bioimageio.spec`` (its files checked against their
    sha256; nothing is downloaded). A package napari-segnet wrote becomes the same
    native network again; any other runs as a :class:`PackageNet` with the package's
    pre- and postprocessing, through the same overlap-tile engine as native models:
    tiles on the package's size grid, and the output halo as the tile margin (when
    the package gives none, the network's receptive field, measured).

    Parameters
    ----------
    path : path-like
        The package.
    trust_code : bool
        Allow a state-dict package whose architecture is Python code (running it can do
        anything that code does). TorchScript, ONNX (with onnxruntime) and napari-segnet
        packages never need it.
    device : str or torch.device
        Where to put the weights.
    check : bool
        Run the package's test input through napari-segnet and compare with its test
        output (within the package's reproducibility tolerance).

    Raises
    ------
    ModelFileError
        Not a package, a file whose sha256 does not match, unsupported weights (the
        message names the formats that run), code without ``trust_code``, or a test
        output that does not reproduce.
    """
    where = str(path)
    descr = describe(path)
    own = getattr(descr.config, CONFIG_KEY, None)
    if isinstance(own, dict) and descr.weights.pytorch_state_dict is not None:
        model = _native(descr, own, where)
    else:
        geo = _geometry(descr, where)
        net = _foreign_net(descr, trust_code, where).eval()
        norm, pre = normalization_and_ops(descr.inputs[0], where)
        post = postprocessing_ops(descr.outputs[0], geo["out_axes"], where)
        config = {
            "arch": "bioimageio",
            "dims": geo["dims"],
            "in_channels": geo["in_channels"],
            "n_classes": geo["n_classes"],
            "package": where,
        }
        model = PackageNet(
            net,
            config,
            in_axes=geo["in_axes"],
            out_axes=geo["out_axes"],
            pre=pre,
            post=post,
            minimum=geo["minimum"],
            step=geo["step"],
            halo=geo["halo"],
        ).eval()
        if geo["halo"] == 0:
            model._set_geometry(_measure_halo(model), geo["step"])
        model.meta.update(
            classes=geo["classes"],
            target="semantic",
            normalization=norm.to_dict(),
            trained=True,
            name=str(descr.name),
            description=str(descr.description),
        )
    model.source = where
    model = model.to(device).eval()
    if check:
        reproduce(descr, model, where)
    return model


def _channels_first(array: np.ndarray, axes: list[str]) -> np.ndarray:
    """A test tensor as ``(C, *spatial)``: batch dropped, channel first."""
    if "batch" in axes:
        array, axes = np.take(array, 0, axis=axes.index("batch")), [a for a in axes if a != "batch"]
    if "channel" not in axes:
        array, axes = array[None], ["channel", *axes]
    order = ["channel", *[a for a in axes if a in ("z", "y", "x")]]
    return np.transpose(array, [axes.index(a) for a in order])


def reproduce(descr, model: SegNet, where: str) -> None:
    """Raise unless napari-segnet turns the package's test input into its test output."""
    from ..engine.predict import predict

    inp, out = descr.inputs[0], descr.outputs[0]
    load = lambda t: np.load(io.BytesIO(_read(t.test_tensor)), allow_pickle=False)  # noqa: E731
    image = _channels_first(load(inp), [str(a.id) for a in inp.axes])
    expected = _channels_first(load(out), [str(a.id) for a in out.axes]).astype(np.float32)
    axes = "C" + "ZYX"[3 - model.dims :]
    got = predict(
        image, model, axes, tile_size=image.shape[1:], border=0, device="cpu", precision="float32"
    )
    tol = next(iter(descr.config.bioimageio.reproducibility_tolerance), None)
    atol, rtol = (tol.absolute_tolerance, tol.relative_tolerance) if tol else (1e-3, 1e-3)
    allowed = (tol.mismatched_elements_per_million if tol else 100) * expected.size / 1e6
    if got.shape != expected.shape:
        raise ModelFileError(
            f"{where}: the test output has shape {expected.shape}, napari-segnet computes "
            f"{got.shape} from the test input"
        )
    bad = np.abs(got - expected) > atol + rtol * np.abs(expected)
    if bad.sum() > allowed:
        raise ModelFileError(
            f"{where}: napari-segnet does not reproduce the package's test output from its "
            f"test input ({int(bad.sum())} values differ, by up to "
            f"{float(np.abs(got - expected).max()):.3g}); the package is broken or uses "
            "processing napari-segnet does not support"
        )
