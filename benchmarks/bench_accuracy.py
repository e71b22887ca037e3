"""Accuracy on real nuclei: the DSB 2018 validation split, per modality, models and baselines.

Run: python benchmarks/bench_accuracy.py --data ../shared/data/dsb2018
     [--split benchmarks/dsb2018_split.csv] [--models nuclei,nuclei_he,path/to/model] [--limit N]
     [--baselines otsu-watershed,voronoi-otsu] [--json OUT]

Scores, per method and modality (objects matched by IoU with ``ns.metrics.iou_matrix``; at
thresholds of 0.5 and above a match is unique, so a pair is a true positive when its IoU is
above the threshold, as in ``ns.average_precision``):

- AP@0.5, AP@0.75, pooled the StarDist way: true positives, false positives and misses are
  summed over the images of a modality, then AP = TP / (TP + FP + FN);
- DSB score: per image the mean over IoU thresholds 0.5, 0.55, ..., 0.95 of TP / (TP + FP + FN),
  then the mean over images (the 2018 Data Science Bowl's metric);
- seconds per megapixel: the wall time of the segmentation call (normalisation, network and
  instance labelling; for a baseline the whole function), summed over images and divided by
  their megapixels. The first model call runs once on a small image beforehand (warm-up).

Methods:

- each model in ``--models`` (a bundled name or a file, as ``ns.load_model`` takes it), run by
  ``ns.segment`` with its own defaults. A colour image given to a grey model is turned into
  the mean over its channels (counted in the table's notes); a colour model gets the colour
  image (axes ``YXC``) and a grey image repeated over its channels;
- ``otsu-watershed``: Gaussian blur (sigma 1), Otsu threshold, holes filled, objects under 15 px
  removed; seeds are maxima of the distance transform (``peak_local_max``) at least
  ``min_distance`` apart, where ``min_distance`` = a quarter of the median equivalent diameter
  of the Otsu mask's connected pieces (at least 3 px), so it adapts to the image's nucleus
  size without looking at the labels; then a watershed of the negative distance in the mask;
- ``voronoi-otsu``: as pyclesperanto's ``voronoi_otsu_labeling`` (spot sigma 2, outline
  sigma 2): seeds are the local maxima (3x3) of the image blurred with sigma 2, the mask is an
  Otsu threshold of the image blurred with sigma 2, and each mask pixel takes the label of its
  nearest seed inside the mask (a Voronoi partition of the mask).

Both baselines see the grey image (mean over channels) and invert it first when it shows dark
nuclei on a bright background, by this rule: the median lies above the midpoint of the 0.5th
and 99.5th percentiles (the background, which covers most pixels, is then the bright side).
This holds for all brightfield and stained images of the data and for no fluorescence image.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label as cc_label
from skimage.segmentation import watershed

import napari_segnet as ns
from napari_segnet.metrics import iou_matrix

# The bundled models and, for comparison, the earlier one trained on synthetic images only.
SYNTHETIC = Path(__file__).resolve().parent.parent / "tests" / "data" / "nuclei_synthetic.segnet"
DEFAULT_MODELS = f"nuclei,nuclei_he,{SYNTHETIC}"

MODALITIES = ("fluorescence", "brightfield", "stained")
DSB_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


# ---------------------------------------------------------------- scores
def match_counts(gt: np.ndarray, pred: np.ndarray, thresholds) -> np.ndarray:
    """(TP, FP, FN) per threshold (rows), thresholds at least 0.5 (unique matches)."""
    iou = iou_matrix(gt, pred)
    n_g, n_p = iou.shape
    tp = np.array([int((iou > t).sum()) for t in thresholds])
    return np.stack([tp, n_p - tp, n_g - tp], axis=1)


def ratio(tp: int, fp: int, fn: int) -> float:
    d = tp + fp + fn
    return 1.0 if d == 0 else tp / d


def image_scores(gt: np.ndarray, pred: np.ndarray) -> dict:
    c = match_counts(gt, pred, DSB_THRESHOLDS)
    return {
        "counts_050": c[0].tolist(),
        "counts_075": c[5].tolist(),
        "dsb": float(np.mean([ratio(*row) for row in c])),
        "objects": int(c[0][0] + c[0][2]),
        "predicted": int(c[0][0] + c[0][1]),
    }


def summarise(per_image: list[dict]) -> dict:
    c50 = np.sum([r["counts_050"] for r in per_image], axis=0)
    c75 = np.sum([r["counts_075"] for r in per_image], axis=0)
    mpix = sum(r["mpix"] for r in per_image)
    return {
        "AP@0.5": ratio(*c50),
        "AP@0.75": ratio(*c75),
        "DSB": float(np.mean([r["dsb"] for r in per_image])),
        "s_per_MPix": sum(r["seconds"] for r in per_image) / mpix,
        "images": len(per_image),
        "objects": int(sum(r["objects"] for r in per_image)),
        "predicted": int(sum(r["predicted"] for r in per_image)),
        "TP_FP_FN@0.5": c50.tolist(),
    }


# ---------------------------------------------------------------- baselines
def grey_nuclei_bright(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Grey float image with bright nuclei; True if it was inverted (see the module doc)."""
    g = image.astype(np.float32)
    if g.ndim == 3:
        g = g.mean(-1)
    lo, hi = np.percentile(g, [0.5, 99.5])
    inverted = bool(np.median(g) > 0.5 * (lo + hi))
    if inverted:
        g = g.max() - g
    return g, inverted


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    g, _ = grey_nuclei_bright(image)
    g = ndi.gaussian_filter(g, 1.0)
    mask = g > threshold_otsu(g)
    pieces = cc_label(ndi.binary_fill_holes(mask))
    pieces = np.where(np.bincount(pieces.ravel())[pieces] >= 15, pieces, 0)
    mask = pieces > 0
    if pieces.max() == 0:
        return pieces.astype(np.int32)
    areas = np.bincount(pieces.ravel())[1:]
    diameter = 2.0 * np.sqrt(np.median(areas) / np.pi)
    min_distance = max(3, round(diameter / 4))
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(
        ndi.gaussian_filter(dist, 1.0), min_distance=min_distance, labels=pieces, exclude_border=0
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    lab = watershed(-dist, markers, mask=mask)
    # pieces without a peak (tiny or flat) keep their own label
    missed = mask & (lab == 0)
    if missed.any():
        extra = cc_label(missed)
        lab[missed] = extra[missed] + lab.max()
    return lab.astype(np.int32)


def voronoi_otsu(image: np.ndarray, spot_sigma: float = 2.0, outline_sigma: float = 2.0):
    g, _ = grey_nuclei_bright(image)
    spots_img = ndi.gaussian_filter(g, spot_sigma)
    outline_img = ndi.gaussian_filter(g, outline_sigma)
    mask = outline_img > threshold_otsu(outline_img)
    spots = (ndi.maximum_filter(spots_img, size=3) == spots_img) & mask
    seeds = cc_label(spots)
    if seeds.max() == 0:
        return np.zeros(g.shape, np.int32)
    # each pixel takes its nearest seed (Voronoi), kept inside the mask
    _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    lab = np.where(mask, seeds[iy, ix], 0)
    # a Voronoi cell cut by the mask into pieces: keep only the piece with the seed
    lab = cc_label(lab, connectivity=1)
    keep = np.zeros(lab.max() + 1, bool)
    keep[np.unique(lab[spots])] = True
    keep[0] = False
    lab = np.where(keep[lab], lab, 0)
    return lab.astype(np.int32)


BASELINES = {"otsu-watershed": otsu_watershed, "voronoi-otsu": voronoi_otsu}


# ---------------------------------------------------------------- models
def model_runner(model):
    """A function image -> (instances, note) for ``ns.segment`` with this model."""
    c_in = int(model.config.get("in_channels", 1))

    def run(image: np.ndarray):
        note = ""
        if c_in == 1:
            if image.ndim == 3:
                image = image.astype(np.float32).mean(-1)
                note = "rgb->grey"
            res = ns.segment(image, model, axes="YX")
        else:
            if image.ndim == 2:
                image = np.repeat(image[..., None], c_in, axis=-1)
                note = "grey->rgb"
            res = ns.segment(image, model, axes="YXC")
        return np.asarray(res.instances), note

    return run


# ---------------------------------------------------------------- main
def read_split(path: Path, limit: int | None) -> dict[str, list[str]]:
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    out: dict[str, list[str]] = {}
    for r in rows:
        ids = out.setdefault(r["modality"], [])
        if limit is None or len(ids) < limit:
            ids.append(r["id"])
    return out


def fmt_table(results: dict, notes: dict) -> str:
    lines = [
        "| method | modality | AP@0.5 | AP@0.75 | DSB score | s/MPix | images | objects "
        "| predicted |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, per_mod in results.items():
        for mod, s in per_mod.items():
            name = method + (f" ({notes[method][mod]})" if notes[method].get(mod) else "")
            lines.append(
                f"| {name} | {mod} | {s['AP@0.5']:.3f} | {s['AP@0.75']:.3f} | {s['DSB']:.3f} "
                f"| {s['s_per_MPix']:.2f} | {s['images']} | {s['objects']} | {s['predicted']} |"
            )
    return "\n".join(lines)


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--data", type=Path, required=True, help="the dsb2018 folder")
    a.add_argument("--split", type=Path, default=Path(__file__).with_name("dsb2018_split.csv"))
    a.add_argument("--models", default=DEFAULT_MODELS, help="names or paths, comma-separated")
    a.add_argument("--baselines", default=",".join(BASELINES), help="comma-separated; '' none")
    a.add_argument("--limit", type=int, default=None, help="first N val images per modality")
    a.add_argument("--json", type=Path, default=None, help="write all scores here")
    args = a.parse_args()

    val = read_split(args.split, args.limit)
    mods = [m for m in MODALITIES if m in val] + sorted(set(val) - set(MODALITIES))
    methods = {}
    for spec in filter(None, args.models.split(",")):
        model = ns.load_model(spec)
        run = model_runner(model)
        run(np.zeros((64, 64), np.uint8) + np.uint8(10))  # warm-up
        methods[spec if spec in ns.available_models() else Path(spec).stem] = run
    if "nuclei" in methods and "nuclei_he" in methods:
        # What the Segment panel picks by default: the colour model for RGB images.
        grey, colour = methods["nuclei"], methods["nuclei_he"]
        methods["nuclei / nuclei_he by channels"] = lambda im: (
            colour(im) if im.ndim == 3 else grey(im)
        )
    for name in filter(None, args.baselines.split(",")):
        methods[name] = lambda im, f=BASELINES[name]: (f(im), "")

    images = {}
    for mod in mods:
        for i in val[mod]:
            im = tifffile.imread(args.data / "images" / f"{i}.tif")
            gt = tifffile.imread(args.data / "labels" / f"{i}.tif").astype(np.int32)
            images[i] = (im, gt)

    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    notes: dict[str, dict] = {}
    per_image: dict[str, dict] = {}
    for method, run in methods.items():
        results[method], notes[method], per_image[method] = {}, {}, {}
        t_method = time.perf_counter()
        for mod in mods:
            rows, mod_notes = [], set()
            for i in val[mod]:
                im, gt = images[i]
                t = time.perf_counter()
                pred, note = run(im)
                sec = time.perf_counter() - t
                if note:
                    mod_notes.add(note)
                r = image_scores(gt, pred)
                r.update(id=i, seconds=sec, mpix=gt.size / 1e6)
                rows.append(r)
                per_image[method][i] = r
            results[method][mod] = summarise(rows)
            notes[method][mod] = ", ".join(sorted(mod_notes))
        print(f"{method}: {time.perf_counter() - t_method:.1f} s", flush=True)

    total = time.perf_counter() - t_start
    print()
    print(fmt_table(results, notes))
    print(
        f"\ntotal {total:.1f} s; val images per modality: "
        + ", ".join(f"{m} {len(val[m])}" for m in mods)
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": platform.platform(),
                    "split": str(args.split),
                    "limit": args.limit,
                    "seconds": total,
                    "results": results,
                    "notes": notes,
                    "per_image": per_image,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
