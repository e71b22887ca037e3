"""Writing a model as a bioimage.io model package (format 0.5), built with ``bioimageio.spec``."""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from ..errors import ModelFileError, NotAModelError, SegNetError
from ..models.base import SegNet
from ..models.registry import ARCHITECTURES
from . import bioimageio_docs as docs
from .bioimageio_source import CALLABLE, FILE_NAME, architecture_source

WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript")
# Where napari-segnet keeps its own settings inside the rdf's ``config``.
CONFIG_KEY = "napari_segnet"
# Outputs are probabilities: bioimage.io's runners must reproduce them to this.
TOLERANCE = 1e-4


def require_spec():
    """``bioimageio.spec``, or an error that says how to install it."""
    try:
        import bioimageio.spec
    except ImportError:
        raise SegNetError(
            "bioimage.io packages need the bioimageio.spec package: "
            "pip install 'napari-segnet[bioimageio]'"
        ) from None
    return bioimageio.spec


def _spatial(dims: int) -> str:
    return "zyx"[3 - dims :]


def _test_input(model: SegNet, image, minimum: int) -> np.ndarray:
    """The test input as float32 ``(C, *spatial)``, cut to the package's size grid."""
    if image is None:
        from ..data import synthetic_nuclei

        side = max(minimum, 256 if model.dims == 2 else 48)
        side = minimum + -(-(side - minimum) // model.divisor) * model.divisor
        image, _ = synthetic_nuclei((side,) * model.dims, seed=0)
        image = np.repeat(image[None], model.in_channels, axis=0)
    image = np.asarray(image)
    if image.ndim == model.dims:
        image = image[None]
    if image.ndim != model.dims + 1 or image.shape[0] != model.in_channels:
        raise SegNetError(
            f"test_image must be {model.dims}D (one channel) or channels first "
            f"({model.in_channels}, ...), not of shape {image.shape}"
        )
    sizes = []
    for n in image.shape[1:]:
        if n < minimum:
            raise SegNetError(
                f"test_image is {image.shape[1:]} px; this model's packages need at least "
                f"{minimum} px on each axis (twice the halo {model.halo} plus {model.divisor})"
            )
        sizes.append(minimum + (n - minimum) // model.divisor * model.divisor)
    return image[(slice(None), *(slice(0, s) for s in sizes))].astype(np.float32)


def _run(model: SegNet, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels of the whole test input through napari-segnet's engine.

    One tile covering the image and no mirror border: exactly the network's forward
    pass on the test input, which is what a bioimage.io runner computes.
    """
    from ..segment import segment

    axes = "C" + _spatial(model.dims).upper()
    res = segment(
        image,
        model,
        axes,
        tile_size=image.shape[1:],
        border=0,
        device="cpu",
        diameter=None,
        precision="float32",
    )
    labels = res.instances if res.instances is not None else res.semantic
    return np.asarray(res.probabilities, np.float32), np.asarray(labels)


def _identifier(text: str) -> str:
    """A channel name bioimage.io accepts: letters, digits and underscores."""
    return re.sub(r"\W+", "_", str(text)).strip("_") or "class"


def _weights(model: SegNet, folder: Path, formats: Sequence[str], example: torch.Tensor):
    """Weight files in ``folder``; returns the ``WeightsDescr`` fields."""
    from bioimageio.spec.model import v0_5 as spec

    net = copy.deepcopy(model).cpu().eval()
    version = spec.Version(torch.__version__.split("+")[0])
    out: dict[str, Any] = {}
    if "pytorch_state_dict" in formats:
        arch = folder / FILE_NAME
        arch.write_text(architecture_source(), encoding="utf-8")
        torch.save(
            {k: v.detach().cpu() for k, v in net.state_dict().items()}, folder / "weights.pt"
        )
        out["pytorch_state_dict"] = spec.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
            architecture=spec.ArchitectureFromFileDescr(
                source=arch, callable=spec.Identifier(CALLABLE), kwargs=dict(model.config)
            ),
            pytorch_version=version,
        )
    if "torchscript" in formats:
        with torch.no_grad():
            traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(str(folder / "weights_torchscript.pt"))
        out["torchscript"] = spec.TorchscriptWeightsDescr(
            source=folder / "weights_torchscript.pt",
            pytorch_version=version,
            parent="pytorch_state_dict" if "pytorch_state_dict" in out else None,
        )
    return out


def _tensors(model: SegNet, folder: Path, image: np.ndarray, prob: np.ndarray, minimum: int):
    """The input and output tensor descriptions, with their test tensors saved in ``folder``."""
    from bioimageio.spec.model import v0_5 as spec

    np.save(folder / "test_input.npy", image[None])
    np.save(folder / "test_output.npy", prob[None])
    tifffile.imwrite(folder / "sample_input.tif", image[None], photometric="minisblack")
    tifffile.imwrite(folder / "sample_output.tif", prob[None], photometric="minisblack")
    meta = model.metadata
    grid = spec.ParameterizedSize(min=minimum, step=model.divisor)
    in_axes: list[Any] = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[f"channel{i}" for i in range(model.in_channels)]),
    ]
    in_axes += [spec.SpaceInputAxis(id=spec.AxisId(a), size=grid) for a in _spatial(model.dims)]
    norm = meta.normalization
    pre: list[Any] = [
        spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32")),
    ]
    axes = tuple(spec.AxisId(a) for a in _spatial(model.dims))
    if norm.kind == "percentile":
        pre.append(
            spec.ScaleRangeDescr(
                kwargs=spec.ScaleRangeKwargs(
                    axes=axes, min_percentile=norm.low, max_percentile=norm.high
                )
            )
        )
    elif norm.kind == "fixed":
        pre.append(
            spec.ScaleLinearDescr(
                kwargs=spec.ScaleLinearKwargs(gain=norm.scale, offset=-norm.offset * norm.scale)
            )
        )
    names = [_identifier(c) for c in meta.classes][: model.n_classes]
    names += [f"class{i}" for i in range(len(names), model.n_classes)]
    out_axes: list[Any] = [spec.BatchAxis(), spec.ChannelAxis(channel_names=names)]
    out_axes += [
        spec.SpaceOutputAxisWithHalo(
            id=spec.AxisId(a),
            halo=model.halo,
            size=spec.SizeReference(tensor_id=spec.TensorId("raw"), axis_id=spec.AxisId(a)),
        )
        for a in _spatial(model.dims)
    ]
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("raw"),
        description="image, channels first",
        axes=in_axes,
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=spec.FileDescr(source=folder / "sample_input.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=pre,
    )
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"),
        description=f"class probabilities: {', '.join(meta.classes)}",
        axes=out_axes,
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=spec.FileDescr(source=folder / "sample_output.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel")))],
    )
    return inputs, outputs


def export_bioimageio(
    model: SegNet,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str | dict] | None = None,
    license: str = "MIT",
    cite: Sequence[dict] | None = None,
    test_image=None,
    weights: Sequence[str] = WEIGHT_FORMATS,
    overwrite: bool = False,
) -> Path:
    """Write a model as a bioimage.io model package (``.zip``, or a folder).

    The package follows the bioimage.io model format 0.5 and is built and validated
    with ``bioimageio.spec`` (``pip install 'napari-segnet[bioimageio]'``): the network
    as a PyTorch state dict with its architecture as one Python file, and as
    TorchScript; the normalisation as the input's preprocessing, a softmax as the
    output's postprocessing; the output halo equal to ``model.halo`` and input sizes on
    the grid ``2 * halo + divisor + n * divisor``; a test input and the test output
    napari-segnet computes from it; a cover image and a README.

    Parameters
    ----------
    model : SegNet
        A model from :func:`build_model`, :func:`train` or :func:`load_model`.
    path : path-like
        A path ending in ``.zip`` writes one zip file; any other path a folder.
    name, description : str, optional
        Default: the model's recorded name and description.
    authors : sequence of str or dict, optional
        Names, or dicts with the bioimage.io author fields (``name``, ``affiliation``,
        ``orcid``, ...). Default: "napari-segnet user".
    license : str
        An SPDX licence identifier.
    cite : sequence of dict, optional
        Each with ``text`` and ``doi`` or ``url``. Default: the UNet paper.
    test_image : array-like, optional
        The package's test input, ``(*spatial)`` or ``(C, *spatial)``; cut to the size
        grid. Default: a synthetic nuclei image.
    weights : sequence of str
        ``"pytorch_state_dict"`` and/or ``"torchscript"``.
    overwrite : bool
        Replace an existing package at ``path``.

    Returns
    -------
    Path
        Where the package was written.

    Raises
    ------
    SegNetError
        ``bioimageio.spec`` is missing, an unknown weight format, a test image that
        is too small, or a package the specification rejects (nothing is written).
    ModelFileError
        ``path`` exists and ``overwrite`` is False.
    """
    if not isinstance(model, SegNet) or model.config.get("arch") not in ARCHITECTURES:
        raise NotAModelError(
            "export_bioimageio takes a napari-segnet network (build_model, train or "
            f"load_model), not {type(model).__name__}; a model loaded from another "
            "bioimage.io package is shared as that package"
        )
    if model.arch == "maskrcnn":
        # bioimage.io describes tensors in and out; a detector returns boxes and masks.
        raise SegNetError(
            "export_bioimageio takes pixel-wise networks; a Mask R-CNN model is shared as "
            "its .segnet file (save_model)"
        )
    unknown = sorted(set(weights) - set(WEIGHT_FORMATS)) or ([] if weights else ["none given"])
    if unknown:
        raise SegNetError(f"unknown weight format(s) {unknown}; use some of {WEIGHT_FORMATS}")
    spec_pkg = require_spec()
    from bioimageio.spec.model import v0_5 as spec

    try:
        spec.LicenseId(license)
    except ValueError:
        raise SegNetError(
            f"license {license!r} is not an SPDX licence identifier bioimage.io accepts "
            "(e.g. MIT, Apache-2.0, BSD-3-Clause, CC-BY-4.0)"
        ) from None
    out = Path(path)
    if out.exists() and not overwrite:
        raise ModelFileError(f"{out} exists already; choose another path or pass overwrite=True")
    meta = model.meta
    name = name or meta.get("name") or f"napari-segnet {model.arch}"
    description = description or meta.get("description") or f"A napari-segnet {model.arch}"
    minimum = 2 * model.halo + model.divisor
    image = _test_input(model, test_image, minimum)
    prob, labels = _run(model, image)
    with tempfile.TemporaryDirectory(prefix="segnet-bioimageio-") as tmp:
        folder = Path(tmp)
        inputs, outputs = _tensors(model, folder, image, prob, minimum)
        centre = (image.shape[1] // 2,) if model.dims == 3 else ()
        docs.write_cover(folder / "cover.png", image[(0, *centre)], labels[centre])
        docs.write_text(folder / "README.md", docs.readme(model, name, description))
        example = torch.from_numpy(np.zeros((1, model.in_channels) + (minimum,) * model.dims))
        entries = _weights(model, folder, weights, example.float())
        try:
            descr = spec.ModelDescr(
                name=name,
                description=description,
                authors=[
                    spec.Author(**a) if isinstance(a, dict) else spec.Author(name=str(a))
                    for a in (authors or ["napari-segnet user"])
                ],
                cite=[
                    spec.CiteEntry(**c)
                    for c in (
                        cite
                        or [
                            {
                                "text": "Ronneberger, Fischer and Brox: U-Net: Convolutional "
                                "Networks for Biomedical Image Segmentation (MICCAI 2015)",
                                "doi": "10.1007/978-3-319-24574-4_28",
                            }
                        ]
                    )
                ],
                license=license,
                documentation=spec.FileDescr(source=folder / "README.md"),
                covers=[spec.FileDescr(source=folder / "cover.png")],
                tags=["napari-segnet", "segmentation", f"{model.dims}d", model.arch],
                inputs=[inputs],
                outputs=[outputs],
                weights=spec.WeightsDescr(**entries),
                config=spec.Config(
                    bioimageio=spec.BioimageioConfig(
                        reproducibility_tolerance=[
                            spec.ReproducibilityTolerance(
                                absolute_tolerance=TOLERANCE,
                                relative_tolerance=TOLERANCE,
                                mismatched_elements_per_million=0,
                            )
                        ]
                    ),
                    **{CONFIG_KEY: {"config": model.config, "meta": meta}},
                ),
            )
        except ValueError as e:  # pydantic's ValidationError: a field the format rejects
            raise SegNetError(f"the package would not be valid: {_spec_errors(e)}") from None
        _save(spec_pkg, descr, out, folder, overwrite)
    return out


def _spec_errors(exc: ValueError) -> str:
    """A validation error in a line: the fields at fault and the start of each message."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc).splitlines()[0]
    parts = []
    for e in errors()[:3]:
        where = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        parts.append(f"{where}: {e['msg'][:100]}")
    return "; ".join(parts)


def _save(spec_pkg, descr, out: Path, folder: Path, overwrite: bool) -> None:
    """Write the package beside ``out`` and move it there when complete."""
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        target = staging / out.name
        if out.suffix == ".zip":
            spec_pkg.save_bioimageio_package(descr, output_path=target)
        else:
            spec_pkg.save_bioimageio_package_as_folder(descr, output_path=target)
        if out.exists() and overwrite:
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(target, out)
    except OSError as e:
        raise ModelFileError(f"cannot write the package to {out}: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
