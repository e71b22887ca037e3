"""Dense CRF: napari-segnet's torch version against pydensecrf on the same inputs.

Run: pip install pydensecrf2; python benchmarks/bench_crf.py [--device cpu]

Same image, unary (from the same probabilities, clipped as pydensecrf's
unary_from_softmax does), parameters and 5 iterations for both; prints mIoU before and
after, the share of pydensecrf's mIoU gain that napari-segnet reaches, and the best of
``--repeats`` timed runs of each, taken in turns, in seconds for 768x1024 and 1536x2048
RGB images with 4 classes, then for three real photos shipped with scikit-image
(``--sizes none`` or ``--photos none`` leave either out; ``--params`` sets the five
kernel parameters). The photos have no ground truth: their four classes are k-means
colour clusters, cleaned by a median filter, so their rows show timing on real image
content and whether both methods agree.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage as ndi

import napari_segnet as ns
from timing import best_times

PARAMS = {
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 80.0,
    "bilateral_srgb": 13.0,
    "bilateral_compat": 10.0,
}


def coarse_prediction(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Four-class probabilities from ``gt``, blurred (sigma: 1/64 of the longer side)
    and noisy, as a coarse network output would be."""
    onehot = np.stack([(gt == k).astype(np.float32) for k in range(4)])
    coarse = np.stack([ndi.gaussian_filter(o, max(gt.shape) / 64) for o in onehot])
    coarse = coarse + rng.uniform(0, 0.7, coarse.shape).astype(np.float32)
    return (coarse / coarse.sum(0, keepdims=True)).astype(np.float32)


def scene(shape, seed=0):
    """A photo-like RGB scene of four textured classes, and a coarse noisy prediction."""
    rng = np.random.default_rng(seed)
    h, w = shape
    # Class layout: smooth random fields, thresholded into four regions.
    fields = [ndi.gaussian_filter(rng.normal(size=(h // 8, w // 8)), 6) for _ in range(3)]
    fields = [ndi.zoom(f, 8, order=3)[:h, :w] for f in fields]
    gt = np.argmax(np.stack([np.zeros((h, w)) + 0.02, *fields]), 0)
    base = np.array([[40, 45, 50], [200, 70, 60], [70, 170, 80], [80, 90, 210]], float)
    img = base[gt]
    shade = ndi.zoom(ndi.gaussian_filter(rng.normal(size=(h // 16, w // 16)), 3), 16, order=1)[
        :h, :w
    ]
    img = img * (1 + 0.25 * shade[..., None])
    texture = ndi.gaussian_filter(rng.normal(size=(h, w, 3)), (1.5, 1.5, 0)) * 30
    img = np.clip(img + texture + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, coarse_prediction(gt, rng), gt


def photo(name: str, seed: int = 0):
    """A real RGB photo from scikit-image, four colour-cluster classes as its reference
    and a coarse noisy prediction of them."""
    from scipy.cluster.vq import kmeans2
    from skimage import data

    img = getattr(data, name)()[..., :3]
    h, w = img.shape[:2]
    pixels = img.reshape(-1, 3).astype(np.float64)
    _, cluster = kmeans2(pixels, 4, seed=seed, minit="++")
    gt = ndi.median_filter(cluster.reshape(h, w), 7)
    return img, coarse_prediction(gt, np.random.default_rng(seed)), gt


def run_pydensecrf(img, prob, n_iter=5):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = prob.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
    d.addPairwiseGaussian(sxy=PARAMS["gaussian_sxy"], compat=PARAMS["gaussian_compat"])
    d.addPairwiseBilateral(
        sxy=PARAMS["bilateral_sxy"],
        srgb=PARAMS["bilateral_srgb"],
        rgbim=np.ascontiguousarray(img),
        compat=PARAMS["bilateral_compat"],
    )
    q = d.inference(n_iter)
    return np.array(q).reshape(c, h, w)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="768x1024,1536x2048")
    p.add_argument("--photos", default="astronaut,coffee,chelsea")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each, best kept")
    p.add_argument(
        "--params",
        default=",".join(f"{v:g}" for v in PARAMS.values()),
        help="gaussian_sxy,gaussian_compat,bilateral_sxy,bilateral_srgb,bilateral_compat",
    )
    a = p.parse_args()
    PARAMS.update(zip(PARAMS, (float(v) for v in a.params.split(","))))
    try:
        import pydensecrf  # noqa: F401

        have = True
    except ImportError:
        have = False
        print("pydensecrf is not installed (pip install pydensecrf2): timing napari-segnet only")
    print(
        f"device {a.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"parameters {PARAMS}, 5 iterations"
    )
    print(
        "| image | mIoU before | after (napari-segnet) | after (pydensecrf) | share of gain "
        "| s napari-segnet | s pydensecrf | speed ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    sizes = [] if a.sizes == "none" else a.sizes.split(",")
    cases = [
        (size, lambda size=size: scene(tuple(int(v) for v in size.split("x")))) for size in sizes
    ]
    if a.photos != "none":
        cases += [(name, lambda name=name: photo(name)) for name in a.photos.split(",")]
    for label, make in cases:
        img, coarse, gt = make()
        if label in a.photos.split(","):
            label = f"{label} {img.shape[0]}x{img.shape[1]} (photo)"
        before = ns.mean_iou(gt, coarse.argmax(0), 4)
        fns = [lambda img=img, coarse=coarse: ns.refine_crf(img, coarse, device=a.device, **PARAMS)]
        if have:
            fns.append(lambda img=img, coarse=coarse: run_pydensecrf(img, coarse))
        outs, secs = best_times(fns, a.repeats)
        after = ns.mean_iou(gt, outs[0].argmax(0), 4)
        if have:
            after_p = ns.mean_iou(gt, outs[1].argmax(0), 4)
            share = (after - before) / max(after_p - before, 1e-9)
            print(
                f"| {label} | {before:.4f} | {after:.4f} | {after_p:.4f} | {share:.0%} | "
                f"{secs[0]:.2f} | {secs[1]:.2f} | {secs[1] / secs[0]:.2f}x |",
                flush=True,
            )
        else:
            print(
                f"| {label} | {before:.4f} | {after:.4f} | - | - | {secs[0]:.2f} | - | - |",
                flush=True,
            )


if __name__ == "__main__":
    main()
