"""The ``segment`` command's OME-Zarr inputs: blockwise, resumable, optionally on a cluster."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(seg: argparse.ArgumentParser) -> None:
    """The options that apply to OME-Zarr inputs."""
    g = seg.add_argument_group(
        "OME-Zarr inputs",
        "An OME-Zarr image (its group folder) is segmented block by block into OME-NGFF "
        "labels NAME_semantic and NAME_instances: in OUT/<image>_labels.ome.zarr, or in the "
        "image's own labels/ with --into-input. An interrupted run resumes when rerun.",
    )
    g.add_argument("--level", type=int, default=0, help="resolution level (0: full)")
    g.add_argument(
        "--into-input",
        action="store_true",
        help="write the labels into the input image's group (its arrays are not touched)",
    )
    g.add_argument("--labels-name", default="segnet", help="prefix of the label names")
    g.add_argument(
        "--block-size", type=int, default=None, help="block edge (default 1024 2D, 128 3D)"
    )
    g.add_argument(
        "--label-halo", type=int, default=64, help="context for instances around each block"
    )
    g.add_argument("--workers", type=int, default=0, help="run blocks on N local worker processes")
    g.add_argument("--scheduler", default=None, help="address of a dask scheduler to use")


def output_path(src: Path, out: Path) -> Path:
    """Where a new labels store for ``src`` goes."""
    name = src.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out / f"{name}_labels.ome.zarr"


class Clients:
    """The cluster client, made at the first OME-Zarr input and closed at the end."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.client = None
        self.cluster = None

    def get(self):
        if self.client is None and (self.args.scheduler or self.args.workers > 0):
            from distributed import Client

            if self.args.scheduler:
                self.client = Client(self.args.scheduler)
            else:
                from .cluster import local_cluster

                self.cluster = local_cluster(n_workers=self.args.workers)
                self.client = Client(self.cluster)
        return self.client

    def close(self) -> None:
        for c in (self.client, self.cluster):
            if c is not None:
                c.close()


def segment(src: Path, model, out: Path, args, clients: Clients, tag: str) -> str:
    """Segment one OME-Zarr input; the summary line."""
    from .segment_ome import segment_ome_zarr

    def bar(done: int, total: int) -> None:
        if not args.quiet:
            n = int(30 * done / max(total, 1))
            end = "\n" if done == total else ""
            print(
                f"\r  {tag}: [{'#' * n}{'.' * (30 - n)}] {done}/{total} blocks",
                end=end,
                file=sys.stderr,
                flush=True,
            )

    target = None if args.into_input else output_path(src, out)
    t = time.perf_counter()
    res = segment_ome_zarr(
        src,
        model,
        target,
        level=args.level,
        into_input=args.into_input,
        name=args.labels_name,
        block_size=args.block_size,
        label_halo=args.label_halo,
        overwrite=args.overwrite,
        device=args.device,
        client=clients.get(),
        progress=bar,
    )
    dt = time.perf_counter() - t
    resumed = f", {res.n_resumed} of {res.n_blocks} blocks resumed" if res.n_resumed else ""
    return (
        f"{tag}: {res.n_blocks} blocks in {dt:.1f} s, {res.n_objects} objects{resumed}; "
        f"labels in {res.store}/labels"
    )
