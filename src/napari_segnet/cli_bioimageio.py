"""The ``napari-segnet export-bioimageio`` command (kept apart to keep ``cli.py`` short)."""

from __future__ import annotations

import argparse


def _export(args: argparse.Namespace) -> int:
    import napari_segnet as ns

    model = ns.load_model(args.model)
    path = ns.export_bioimageio(
        model,
        args.out,
        name=args.name,
        description=args.description,
        authors=args.author or None,
        license=args.license,
        weights=tuple(args.weights),
        overwrite=args.overwrite,
    )
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    """Register ``export-bioimageio`` on the CLI's subcommand parsers."""
    exp = sub.add_parser(
        "export-bioimageio",
        help="write a model as a bioimage.io model package (.zip or folder)",
        description="Export a bundled or saved model as a bioimage.io model package "
        "(format 0.5), built and validated with bioimageio.spec: weights as a PyTorch state "
        "dict with its architecture file and as TorchScript, test input and output, cover "
        "image and README. Needs: pip install 'napari-segnet[bioimageio]'.",
    )
    exp.add_argument("model", metavar="MODEL", help="bundled model name or model file")
    exp.add_argument("out", metavar="OUT", help="package to write: NAME.zip, or a folder")
    exp.add_argument("--name", default=None, help="model name (default: the model's)")
    exp.add_argument("--description", default=None, help="one-line description")
    exp.add_argument("--author", action="append", help="author name (repeat for several)")
    exp.add_argument("--license", default="MIT", help="SPDX licence identifier")
    exp.add_argument(
        "--weights",
        nargs="+",
        default=["pytorch_state_dict", "torchscript"],
        choices=["pytorch_state_dict", "torchscript"],
        help="weight formats to include",
    )
    exp.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    exp.set_defaults(func=_export)
