"""``predict``: class probabilities of a whole image through the overlap-tile engine."""

from __future__ import annotations

import threading

import numpy as np

from .. import checks
from ..errors import SegNetError
from ..models.base import SegNet
from .geometry import plan_tiles, roundup
from .normalize import outer_positions
from .plan import Plan, as_source, make_plan, tile_reader
from .runner import Progress, TileTooLarge, run_tiles
from .sinks import ArraySink, Sink


def run_plan(
    src,
    model: SegNet,
    plan: Plan,
    sink: Sink,
    *,
    precision: str = "auto",
    progress: Progress = None,
    cancel: threading.Event | None = None,
) -> None:
    """Run a plan over the whole image, handing every tile to ``sink``.

    On CUDA out-of-memory with a single tile, the tile centre is halved and the run
    starts again (centres already written are simply written again, identically).
    """
    layout = plan.layout

    while True:
        try:
            run_tiles(
                model,
                plan.tiles,
                plan.core,
                tile_reader(src, plan, model),
                sink,
                device=plan.device,
                batch_size=plan.batch_size,
                precision=precision,
                progress=progress,
                cancel=cancel,
            )
            return
        except TileTooLarge:
            smaller = tuple(max(model.divisor, roundup(c // 2, model.divisor)) for c in plan.core)
            if smaller == plan.core:
                raise SegNetError(
                    "out of GPU memory even for the smallest tile; use device='cpu'"
                ) from None
            tiles, core = plan_tiles(
                (0,) * model.dims,
                layout.spatial_shape,
                smaller,
                model.divisor,
                list(outer_positions(layout)),
                halo=model.halo,
                pad=plan.pad,
                shape=layout.spatial_shape,
            )
            plan.tiles, plan.core, plan.batch_size = tiles, core, 1


def predict(
    image,
    model: SegNet,
    axes: str | None = None,
    *,
    tile_size=None,
    batch_size: int | None = None,
    device="auto",
    precision: str = "auto",
    border: int | None = None,
    progress: Progress = None,
    cancel: threading.Event | None = None,
    out=None,
) -> np.ndarray:
    """Class probabilities of an image, computed tile by tile.

    Parameters
    ----------
    image : array-like
        numpy, dask or zarr array; 2D to 5D (see ``axes``).
    model : SegNet
        The network.
    axes : str, optional
        Letters from ``TZCYX`` (``S`` is read as ``C``), e.g. ``"YX"``, ``"ZYX"``,
        ``"TYX"``, ``"YXC"``; guessed if None (see :data:`napari_segnet.axes.GUESS_RULE`).
    tile_size : int or tuple of int, optional
        Size of each tile's valid centre (rounded up to the model's divisor); each
        tile adds the model's halo on every side. None picks the largest tile that
        fits the device's free memory.
    batch_size : int, optional
        Tiles per forward pass; None chooses from free memory.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    precision : str
        ``"auto"`` (bfloat16/float16 autocast on CUDA, float32 elsewhere) or a dtype name.
    border : int, optional
        Pixels of mirror padding at the image border (rounded up to the divisor, at
        most the halo; see :func:`border_pad`). None: 32 px.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)`` after each batch.
    cancel : threading.Event, optional
        Set it to stop; :class:`~napari_segnet.errors.Cancelled` is raised.
    out : array-like, optional
        A writable ``(C, *out_shape)`` float32 (or float64) array, numpy or zarr, to
        write into; it must not share memory with the image.

    Returns
    -------
    numpy.ndarray
        float32 ``(n_classes, *shape without the channel axis)``, or ``out``.

    Raises
    ------
    SegNetError
        For a bad image or parameter, before any work (see "Errors and limits" in
        the documentation).
    """
    src = as_source(image)
    checks.callback("progress", progress)
    checks.cancel_event(cancel)
    plan = make_plan(src, model, axes, tile_size, batch_size, device, precision, border)
    shape = (model.n_classes, *plan.layout.out_shape)
    if out is None:
        out = np.zeros(shape, np.float32)
    else:
        checks.out_array(out, shape, "f", source=src)
    sink = ArraySink(plan.layout, probabilities=out)
    run_plan(src, model, plan, sink, precision=precision, progress=progress, cancel=cancel)
    return out
