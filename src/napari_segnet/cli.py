"""The ``napari-segnet`` command: batch segmentation, training, and a self-check demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import checks, cli_ome, cli_physical
from .cli_bioimageio import add_parser as add_bioimageio_parser


class _Bar:
    """A one-line text progress bar for tiles."""

    def __init__(self, name: str, enabled: bool = True):
        self.name = name
        self.enabled = enabled

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        n = int(30 * done / total)
        print(
            f"\r  {self.name}: [{'#' * n}{'.' * (30 - n)}] {done}/{total} tiles",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if done == total:
            print(file=sys.stderr)


def _error(message: object) -> None:
    """One line on stderr: the first line of the message (tools that fail to read a
    file often add advice over several lines)."""
    lines = str(message).strip().splitlines() or ["unknown error"]
    print(f"napari-segnet: error: {lines[0]}", file=sys.stderr)


def _outputs(out: Path, stem: str, args: argparse.Namespace) -> dict[str, Path]:
    """The files ``segment`` may write for one input."""
    names = {
        "semantic": f"{stem}_semantic.tif",
        "instances": f"{stem}_instances.tif",
        "overlay": f"{stem}_overlay.png",
    }
    if args.probabilities:
        names["probabilities"] = f"{stem}_probabilities.tif"
    if args.measure:
        names["measurements"] = f"{stem}_measurements.csv"
    names["provenance"] = f"{stem}_provenance.json"
    return {k: out / v for k, v in names.items()}


def _check_outputs(
    targets: dict[str, Path], inputs: set[Path], claimed: dict[Path, str], name: str, args
) -> None:
    """Refuse outputs that would replace an input, another input's outputs from this
    run, or (without ``--overwrite``) an existing file."""
    from napari_segnet.errors import SegNetError

    for t in targets.values():
        if t.resolve() in inputs:
            raise SegNetError(f"the output {t} would replace an input; choose another --out")
        if t in claimed:
            raise SegNetError(
                f"the output {t.name} is also that of {claimed[t]} (same file name); "
                "rename one of them"
            )
        if t.exists() and not args.overwrite:
            raise SegNetError(f"{t} exists already; use --overwrite to replace it")
    claimed.update(dict.fromkeys(targets.values(), name))


def _write_results(
    targets: dict[str, Path], image, res, probabilities: bool, phys: cli_physical.Physical
) -> int:
    """Write one input's results, each file whole or not at all; the number of objects.

    Each TIFF keeps the input's axes, resolution and ImageJ/OME metadata (``phys``).
    """
    import tifffile
    from skimage.io import imsave

    from napari_segnet.io.atomic import atomic_write
    from napari_segnet.io.images import overlay_png

    def tif(key: str, data: np.ndarray, axes: str, **kw) -> None:
        data, like = phys.tif(data, axes)
        kw = {**kw, **like}
        atomic_write(targets[key], lambda t: tifffile.imwrite(t, data, compression="zlib", **kw))

    tif("semantic", np.asarray(res.semantic), res.axes)
    n_obj = 0
    if res.instances is not None:
        inst = np.asarray(res.instances)
        n_obj = int(inst.max())
        tif("instances", inst, res.axes)
    if probabilities:
        prob = np.asarray(res.probabilities)
        tif("probabilities", prob, "C" + res.axes, photometric="minisblack")
    preview = overlay_png(np.asarray(image), res.instances, res.semantic)
    atomic_write(targets["overlay"], lambda t: imsave(t, preview, check_contrast=False))
    return n_obj


def _write_records(targets: dict[str, Path], image, res, source: str, rows: list) -> None:
    """Measurements (with ``--measure``) and, last, the provenance sidecar."""
    from napari_segnet import cli_records

    table = None
    if "measurements" in targets:
        table = cli_records.write_measurements(
            targets["measurements"], image, res, res.info.get("spacing")
        )
        if table is not None:
            rows.append({"image": source, **cli_records.summarize(table)})
    skipped = {"provenance", *(["instances"] if res.instances is None else [])}
    skipped |= {"measurements"} if table is None else set()
    written = [p for k, p in targets.items() if k not in skipped]
    cli_records.write_provenance(targets["provenance"], res, source, written)


def _segment(args: argparse.Namespace) -> int:
    import napari_segnet as ns
    from napari_segnet.engine.plan import RunOptions
    from napari_segnet.engine.rescale import rescale_factor
    from napari_segnet.io.images import expand_inputs, read_image
    from napari_segnet.io.ome_zarr import is_ome_zarr

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        _error(f"--out {out} is a file; give a folder")
        return 2
    try:
        auto = args.model == "auto"
        model = ns.load_model("nuclei" if auto else args.model, trust_code=args.trust_code)
        colour_model = ns.load_model("nuclei_he") if auto else None
        # Arguments shared by every input are checked once, before any work.
        RunOptions.check(model, args.tile_size, None, args.device, "auto", None)
        if args.diameter != "auto":
            rescale_factor(model, args.diameter)
        if args.physical_diameter is not None and args.diameter != "auto":
            raise ns.SegNetError("give --diameter (pixels) or --physical-diameter, not both")
        detection = None
        if args.score_threshold is not None:
            if model.arch != "maskrcnn":
                raise ns.SegNetError(
                    f"--score-threshold is for Mask R-CNN models, not this {model.arch!r} model"
                )
            checks.number("--score-threshold", args.score_threshold, low=0, high=1)
            detection = {"score_threshold": args.score_threshold}
    except ns.SegNetError as e:
        _error(e)
        return 2
    jobs: list[tuple[str, object]] = []
    failures: list[str] = []
    if args.sample == "nuclei":
        image, _ = ns.data.synthetic_nuclei((512, 512), seed=args.seed)
        jobs.append(("sample_nuclei", image))
    elif args.sample:
        jobs.append((f"sample_{args.sample}", ns.data.real_nuclei(args.sample)[0]))
    if args.inputs:
        paths, problems = expand_inputs(args.inputs)
        failures += problems
        for p in problems:
            _error(p)
        jobs += [(str(p), p) for p in paths]
    if not jobs and not failures:
        _error("give INPUT files/folders/globs or --sample fluorescence")
        return 2
    n_problems = len(failures)
    summary_path = out / "measurements_summary.csv"
    if args.measure and summary_path.exists() and not args.overwrite:
        _error(f"{summary_path} exists already; use --overwrite to replace it")
        return 2
    summary_rows: list[dict] = []
    out.mkdir(parents=True, exist_ok=True)
    inputs = {p.resolve() for _, p in jobs if isinstance(p, Path)}
    claimed: dict[Path, str] = {}
    clients = cli_ome.Clients(args)
    for i, (name, src) in enumerate(jobs, 1):
        stem = Path(name).stem if isinstance(src, Path) else name
        try:
            if isinstance(src, Path) and is_ome_zarr(src):
                print(cli_ome.segment(src, model, out, args, clients, f"[{i}/{len(jobs)}] {stem}"))
                continue
            targets = _outputs(out, stem, args)
            _check_outputs(targets, inputs, claimed, name, args)
            image = read_image(src) if isinstance(src, Path) else src
            phys = cli_physical.physical(args, src, image)
            t = time.perf_counter()
            colour = _is_rgb(image, phys.axes)
            res = ns.segment(
                image,
                colour_model if colour and colour_model is not None else model,
                **phys.segment_kwargs(args),
                tile_size=args.tile_size,
                device=args.device,
                diameter=args.diameter,
                crf=args.crf,
                link_time=args.link_time,
                detection=detection,
                progress=_Bar(f"[{i}/{len(jobs)}] {stem}", not args.quiet),
            )
            dt = time.perf_counter() - t
            n_obj = _write_results(targets, image, res, args.probabilities, phys)
            _write_records(targets, image, res, name, summary_rows)
            shape = tuple(int(n) for n in image.shape)
            print(f"[{i}/{len(jobs)}] {stem}: {shape} in {dt:.1f} s, {n_obj} objects")
        except (ns.SegNetError, OSError) as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            line = text if text.startswith(name) else f"{name}: {text}"
            failures.append(line)
            _error(line)
    clients.close()
    if summary_rows:
        from napari_segnet.cli_records import write_summary

        write_summary(summary_path, summary_rows)
    return _summary(len(jobs) + n_problems, failures, out)


def _diameter_arg(value: str) -> float | str | None:
    """``--diameter``: a number of pixels, ``auto`` or ``none``."""
    if value.lower() == "auto":
        return "auto"
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give a diameter in pixels, 'auto' or 'none', not {value!r}"
        ) from None


def _is_rgb(image, axes: str | None) -> bool:
    """Whether an image is colour: a last axis of 3 or 4 (RGB/RGBA) or a given C axis of 3."""
    shape = tuple(image.shape)
    if axes is not None:
        return "C" in axes and shape[axes.index("C")] in (3, 4)
    return len(shape) == 3 and shape[-1] in (3, 4)


def _summary(total: int, failures: list[str], out: Path) -> int:
    """Print what happened, failures first; the exit status (0 all, 1 some, 2 none done)."""
    done = total - len(failures)
    if not failures:
        print(f"all {total} input(s) segmented; results in {out}")
        return 0
    if done <= 0:
        print(f"all {len(failures)} input(s) failed; nothing written")
        return 2
    print(f"{len(failures)} of {total} input(s) failed; results of the other {done} in {out}")
    return 1


def _train_inputs(args: argparse.Namespace):
    """What ``train`` reads: a collection folder, or image and label files; None on error."""
    from napari_segnet.io.collection import read_collection
    from napari_segnet.io.images import expand_inputs, read_image

    if args.folder is not None:
        if args.images or args.labels:
            _error("give a FOLDER or --images/--labels, not both")
            return None
        return read_collection(args.folder, channels=args.channels), None
    if not args.images or not args.labels:
        _error("give a collection FOLDER (images/ and labels/) or both --images and --labels")
        return None
    imgs, p1 = expand_inputs(args.images)
    labs, p2 = expand_inputs(args.labels)
    for p in p1 + p2:
        _error(p)
    if p1 or p2:
        return None
    if len(imgs) != len(labs):
        _error(f"{len(imgs)} images but {len(labs)} label images (they are paired in sorted order)")
        return None
    return [np.asarray(read_image(p)) for p in imgs], [np.asarray(read_image(p)) for p in labs]


def _train(args: argparse.Namespace) -> int:
    import napari_segnet as ns
    from napari_segnet.training.augment import Augmentation

    out = Path(args.out if Path(args.out).suffix else args.out + ".segnet")
    if out.exists() and not args.overwrite:
        # Checked before training, so no time is spent on a model that cannot be saved.
        _error(f"{out} exists already; use --overwrite")
        return 2
    inputs = _train_inputs(args)
    if inputs is None:
        return 2
    images, labels = inputs
    model = args.fine_tune if args.fine_tune else args.arch
    if args.fine_tune:
        model = ns.load_model(args.fine_tune)
    max_time = args.max_time
    if args.minutes is not None:
        max_time = args.minutes * 60

    def progress(u):
        if u.kind == "epoch" and not args.quiet:
            score = "" if u.score is None else f", validation {u.score:.3f}"
            print(f"epoch {u.epoch}: loss {u.loss:.4f}{score} ({u.elapsed:.0f} s)", file=sys.stderr)

    trained = ns.train(
        images,
        labels,
        model=model,
        target=args.target,
        epochs=args.epochs,
        max_time=max_time,
        device=args.device,
        seed=args.seed,
        axes=args.axes,
        dims=args.dims,
        progress=progress,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        validation=args.validation,
        augmentation=Augmentation.microscopy() if args.augment == "microscopy" else None,
        diameter=args.diameter,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        pretrained=None if args.pretrained == "none" else args.pretrained,
        workers=args.workers,
    )
    path = ns.save_model(trained, args.out, overwrite=args.overwrite)
    print(f"saved {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import tifffile

    import napari_segnet as ns
    from napari_segnet.io.atomic import atomic_write

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = ns.data.synthetic_nuclei((args.size, args.size), seed=args.seed)
    model = ns.build_model("unet", n_classes=3)
    print(f"model: UNet, halo {model.halo} px, divisor {model.divisor}")
    t0 = time.perf_counter()
    whole = ns.predict(image, model, device=args.device)
    t1 = time.perf_counter()
    tiled = ns.predict(image, model, tile_size=args.tile_size, device=args.device)
    t2 = time.perf_counter()
    diff = float(np.abs(whole - tiled).max())
    print(
        f"auto tiling {t1 - t0:.2f} s, {args.tile_size}px tiles {t2 - t1:.2f} s, "
        f"max difference {diff:.2e}"
    )
    for name, data, kw in (
        ("image.tif", image, {}),
        ("ground_truth.tif", labels, {}),
        ("probabilities.tif", tiled, {"photometric": "minisblack"}),
    ):
        atomic_write(out / name, lambda t, data=data, kw=kw: tifffile.imwrite(t, data, **kw))
    print(f"wrote {out}/image.tif, ground_truth.tif, probabilities.tif")
    return 0 if diff < 1e-4 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-segnet",
        description="Train and run segmentation networks on microscopy images.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    seg = sub.add_parser(
        "segment",
        help="segment images with a model; write labels, probabilities and previews",
        description="Segment TIFF/PNG/zarr/OME-Zarr images (files, folders, globs) with a bundled "
        "or saved model. Writes NAME_semantic.tif, NAME_instances.tif (when the model predicts "
        "instances), optionally NAME_probabilities.tif, a NAME_overlay.png preview and "
        "NAME_provenance.json (model, weights hash, settings, version, time); with --measure "
        "NAME_measurements.csv and measurements_summary.csv. "
        "Inputs that fail are reported, one line each, and the others still processed. "
        "Existing outputs are kept unless --overwrite is given; an output never replaces "
        "an input. Exit status: 0 all inputs segmented, 1 some failed, 2 none segmented "
        "(or a bad model or argument).",
    )
    seg.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or globs")
    seg.add_argument(
        "--model",
        default="auto",
        help="bundled model name, model file or bioimage.io package; auto: nuclei for grey "
        "images, nuclei_he for colour (RGB) ones",
    )
    seg.add_argument(
        "--trust-code",
        action="store_true",
        help="run a bioimage.io package whose network is Python code (only if you trust it)",
    )
    seg.add_argument("--out", required=True, help="output folder")
    seg.add_argument(
        "--sample",
        choices=["fluorescence", "he", "nuclei"],
        help="also segment a bundled sample: a real fluorescence or H&E image (DSB2018, "
        "CC0), or a synthetic nuclei image",
    )
    seg.add_argument(
        "--diameter",
        type=_diameter_arg,
        default="auto",
        help="typical object diameter in pixels (the image is rescaled to the model's); "
        "auto (default): estimated from each image; none: no rescaling",
    )
    seg.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    seg.add_argument("--tile-size", type=int, default=None, help="tile centre in pixels")
    seg.add_argument("--axes", default=None, help="axes of the inputs, e.g. YX, ZYX, YXC")
    seg.add_argument("--crf", action="store_true", help="refine with the dense CRF")
    seg.add_argument("--probabilities", action="store_true", help="also write probabilities")
    seg.add_argument(
        "--measure",
        action="store_true",
        help="write NAME_measurements.csv (one row per object: size, shape, intensity) and "
        "measurements_summary.csv (count, median size, ... per image)",
    )
    seg.add_argument(
        "--link-time",
        action="store_true",
        help="with a T axis: keep each object's id across frames (overlap matching)",
    )
    seg.add_argument("--overwrite", action="store_true", help="replace existing output files")
    seg.add_argument("--seed", type=int, default=0, help="seed of the --sample image")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="Mask R-CNN models: smallest detection score kept (default the model's)",
    )
    cli_ome.add_arguments(seg)
    cli_physical.add_arguments(seg)
    seg.set_defaults(func=_segment)

    tr = sub.add_parser(
        "train",
        help="train a model on a collection folder, or on images and labels",
        description="Train a network and save it. Either a collection FOLDER (images/ and "
        "labels/ matched by file name, optionally index.csv with id and modality columns; "
        "validation holds out whole images per modality), or --images and --labels "
        "(paired in sorted order).",
    )
    tr.add_argument("folder", nargs="?", metavar="FOLDER", help="collection folder")
    tr.add_argument("--images", nargs="+", help="image files, folders or globs")
    tr.add_argument("--labels", nargs="+", help="label files, folders or globs")
    tr.add_argument("--out", required=True, help="model file to write (.segnet)")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    tr.add_argument("--target", default="instances", choices=["instances", "semantic", "scribbles"])
    tr.add_argument("--arch", default="unet", choices=["unet", "deconvnet", "dilated", "maskrcnn"])
    tr.add_argument("--fine-tune", default=None, help="model (name or file) to start from")
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--max-time", type=float, default=None, help="seconds")
    tr.add_argument("--minutes", type=float, default=None, help="time budget in minutes")
    tr.add_argument(
        "--diameter",
        type=float,
        default=None,
        help="rescale each image so its median object diameter is this many pixels",
    )
    tr.add_argument(
        "--channels", type=int, default=None, help="read a collection with 1 or 3 channels"
    )
    tr.add_argument("--patch-size", type=int, default=None, help="training patch side")
    tr.add_argument("--batch-size", type=int, default=None, help="patches per step")
    tr.add_argument("--steps-per-epoch", type=int, default=None, help="steps per epoch")
    tr.add_argument("--validation", type=float, default=0.15, help="fraction held out")
    tr.add_argument(
        "--augment",
        default="default",
        choices=["default", "microscopy"],
        help="microscopy: also scale jitter, blur, grey inversion and stain jitter",
    )
    tr.add_argument("--checkpoint", default=None, help="folder for resumable checkpoints")
    tr.add_argument("--checkpoint-every", type=int, default=1, help="epochs between them")
    tr.add_argument("--resume", default=None, help="checkpoint folder to continue from")
    tr.add_argument(
        "--pretrained",
        default="auto",
        help="bundled model to start from, 'auto' (see the docs) or 'none' (from scratch)",
    )
    tr.add_argument("--dims", type=int, default=2, choices=[2, 3])
    tr.add_argument("--axes", default=None)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--workers", type=int, default=0, help="processes sampling patches (for a GPU)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=_train)

    demo = sub.add_parser(
        "demo",
        help="self-check: synthetic nuclei through the tiled engine, tiled vs untiled",
        description="Make synthetic nuclei, run an untrained UNet through the overlap-tile "
        "engine with and without small tiles, check they agree, and write TIFFs.",
    )
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--size", type=int, default=1024, help="image side in pixels")
    demo.add_argument("--tile-size", type=int, default=256, help="tile centre in pixels")
    demo.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    add_bioimageio_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ._version import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .errors import SegNetError

    try:
        return args.func(args)
    except (SegNetError, OSError) as e:
        _error(e)
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
