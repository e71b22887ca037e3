"""bioimage.io round trip and foreign-model tiling: output differences, in float32 on the CPU.

Run: python benchmarks/bench_bioimageio.py   (needs napari-segnet[bioimageio,onnx], onnx, pytest)

1. Each bundled model is exported as a package (state dict + TorchScript), re-imported
   with ``ns.load_model`` and run through ``ns.segment`` beside the native model, on the
   real sample it was made for and on a synthetic 512 x 512 image; printed: the largest
   absolute difference of the probabilities and the share of pixels whose class differs.
   ``bioimageio.core``'s prediction pipeline is also run on the whole synthetic image
   and compared with napari-segnet's untiled forward pass: on the image as is, and with
   core's default padding (by the halo, before its percentiles are taken).
2. A foreign package (the test suite's small UNet from another code base, packaged with
   ``bioimageio.spec``'s build API) is run tiled (tiles of 32, 64 and 128 px, no mirror
   border) against its untiled forward pass on a 512 x 512 image, once with the halo
   the package declares and once with the halo napari-segnet measures when the package
   gives none; with its weights as a PyTorch state dict, and as ONNX run by onnxruntime.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))  # the test suite's foreign package

from tests.test_bioimageio import _foreign_package, _tiny_unet, _untiled

import napari_segnet as ns


def _core_forward(path: Path, image: np.ndarray, pad: bool) -> np.ndarray:
    """bioimageio.core's whole-image prediction of a ``(C, Y, X)`` image: ``(classes, Y, X)``.

    ``pad``: core's default, which pads the input by the output halo (symmetric) before
    its preprocessing and crops the output; without it, the pipeline on the image as is.
    """
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_model_description

    descr = load_model_description(path)
    sample = create_sample_for_model(descr, inputs={"raw": image[None]}, sample_id="bench")
    out = create_prediction_pipeline(descr).predict_sample_without_blocking(
        sample, skip_input_padding=not pad, skip_output_cropping=not pad
    )
    return np.asarray(out.members["probabilities"].data)[0]


def bundled(tmp: Path) -> None:
    print("bundled model: native vs exported and re-imported (ns.segment, default tiling)")
    print(f"{'model':10} {'image':30} {'export s':>8} {'max |dp|':>9} {'class diff %':>12}")
    for name, kind in (("nuclei", "fluorescence"), ("nuclei_he", "he")):
        model = ns.load_model(name)
        t = time.perf_counter()
        path = ns.export_bioimageio(model, tmp / f"{name}.zip")
        seconds = time.perf_counter() - t
        again = ns.load_model(path)
        real, _ = ns.data.real_nuclei(kind)
        synth, _ = ns.data.synthetic_nuclei((512, 512), seed=11)
        images = {f"real {kind} {real.shape[:2]}": real}
        if model.in_channels == 1:
            images["synthetic (512, 512)"] = synth
        for label, image in images.items():
            want = ns.segment(image, model, diameter=None, device="cpu")
            got = ns.segment(image, again, diameter=None, device="cpu")
            dp = float(np.abs(got.probabilities - want.probabilities).max())
            dc = 100.0 * float((got.semantic != want.semantic).mean())
            print(f"{name:10} {label:30} {seconds:8.1f} {dp:9.2e} {dc:12.4f}")
        if model.in_channels == 1:
            image = synth[None].astype(np.float32)
            untiled = ns.predict(image, model, "CYX", tile_size=512, border=0, device="cpu")
            for pad, how in ((False, "input as is"), (True, "core's symmetric padding")):
                d = np.abs(_core_forward(path, image, pad) - untiled)
                h = model.halo
                print(
                    f"{name:10} bioimageio.core, whole 512 x 512 image, {how}, vs napari-segnet "
                    f"untiled: max |dp| {float(d.max()):.2e} (beyond the halo "
                    f"{float(d[:, h:-h, h:-h].max()):.2e})"
                )


def foreign(tmp: Path) -> None:
    # No mirror border: the image's edges then see the same zero padding as the untiled pass.
    print("\nforeign package: tiled (ns.segment, border=0) vs untiled forward, 512 x 512")
    image = np.random.default_rng(1).normal(50.0, 10.0, (512, 512)).astype(np.float32)
    want = _untiled(_tiny_unet(), image)
    print(f"{'weights':18} {'halo':28} {'tile px':>7} {'tiles':>5} {'max |dp|':>9}")
    for weights in ("pytorch_state_dict", "onnx"):
        for halo, label in ((8, "declared by the package (8)"), (0, "measured")):
            folder = tmp / f"{weights}{halo}"
            folder.mkdir()
            path = _foreign_package(folder, halo=halo, weights=weights)
            model = ns.load_model(path, trust_code=weights == "pytorch_state_dict")
            if not halo:
                label = f"measured ({model.halo})"
            for tile in (32, 64, 128):
                res = ns.segment(image, model, "YX", tile_size=tile, border=0, diameter=None)
                dp = float(np.abs(res.probabilities - want).max())
                print(f"{weights:18} {label:28} {tile:7d} {res.info['n_tiles']:5d} {dp:9.2e}")


def main() -> None:
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        bundled(Path(tmp))
        foreign(Path(tmp))


if __name__ == "__main__":
    main()
