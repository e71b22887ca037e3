"""Helpers shared by the widgets: layer <-> array conversion, models of this session, runs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info

from ..errors import Cancelled, SegNetError
from ..io.bundled import available_models, load_model
from ..models import SegNet

# Models trained in this napari session, by name: the Segment widget lists them.
SESSION_MODELS: dict[str, SegNet] = {}
_listeners: list[Callable[[], None]] = []


def add_session_model(name: str, model: SegNet) -> str:
    """Register a trained model so every Segment widget offers it."""
    base, k = name, 2
    while name in SESSION_MODELS:
        name = f"{base} ({k})"
        k += 1
    SESSION_MODELS[name] = model
    for callback in list(_listeners):
        try:
            callback()
        except RuntimeError:  # its widget was closed and deleted
            _listeners.remove(callback)
    return name


def on_models_changed(callback: Callable[[], None]) -> None:
    _listeners.append(callback)


def model_choices() -> list[str]:
    return [*available_models(), *SESSION_MODELS, "from file..."]


def resolve_model(choice: str, path) -> SegNet:
    if choice in SESSION_MODELS:
        return SESSION_MODELS[choice]
    if choice == "from file...":
        if not path or str(path) in (".", ""):
            raise SegNetError("choose a model file first")
        return load_model(path)
    return load_model(choice)


def layer_axes(layer, rgb: bool | None = None) -> str:
    """Axes string for a layer's data: the last two are YX, RGB adds C, others are Z/T."""
    nd = layer.data.ndim
    is_rgb = getattr(layer, "rgb", False) if rgb is None else rgb
    spatial = nd - (1 if is_rgb else 0)
    lead = {2: "", 3: "Z", 4: "TZ", 5: "TZC"}.get(spatial)
    if lead is None:
        raise SegNetError(f"cannot handle a layer with {nd} dimensions")
    labels = [str(a).upper() for a in getattr(layer, "axis_labels", ())][-spatial:]
    if len(labels) == spatial and all(a in "TZYXC" for a in labels) and len(set(labels)) == spatial:
        axes = "".join(labels)
        if "Y" in axes and "X" in axes:
            return axes + ("C" if is_rgb else "")
    return lead + "YX" + ("C" if is_rgb else "")


def layer_kwargs(layer, drop_leading: int = 0) -> dict[str, Any]:
    """Scale, translate and axis labels to copy from ``layer`` (without RGB's channel)."""
    nd = layer.ndim
    out = {
        "scale": tuple(layer.scale)[drop_leading:nd],
        "translate": tuple(layer.translate)[drop_leading:nd],
    }
    labels = getattr(layer, "axis_labels", None)
    if labels is not None:
        out["axis_labels"] = tuple(labels)[drop_leading:nd]
    return out


def put_layer(viewer, name: str, data, kind: str, like=None, **kwargs):
    """Update the layer called ``name`` or add it: re-runs replace, they do not pile up."""
    if like is not None:
        kwargs = {**layer_kwargs(like), **kwargs}
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    if name in viewer.layers and isinstance(viewer.layers[name], cls):
        layer = viewer.layers[name]
        layer.data = data
        for k in ("scale", "translate"):
            if k in kwargs and len(kwargs[k]) == layer.ndim:
                setattr(layer, k, kwargs[k])
        return layer
    if name in viewer.layers:
        viewer.layers.remove(name)
    add = {"image": viewer.add_image, "labels": viewer.add_labels}[kind]
    try:
        return add(data, name=name, **kwargs)
    except (TypeError, ValueError):
        kwargs.pop("axis_labels", None)
        return add(data, name=name, **kwargs)


class JobError(Exception):
    """Carries a job's exception out of a worker.

    superqt's workers swallow RuntimeErrors (with only a warning), and ``Cancelled``
    is one, so workers raise this wrapper instead.
    """

    def __init__(self, original: BaseException):
        super().__init__(str(original))
        self.original = original


def report(exc: BaseException) -> None:
    """Show a worker's error as a notification; user mistakes without a traceback."""
    if isinstance(exc, JobError):
        exc = exc.original
    if isinstance(exc, Cancelled):
        show_info(f"napari-segnet: {exc}")
    elif isinstance(exc, SegNetError):
        show_error(f"napari-segnet: {exc}")
    else:
        show_error(f"napari-segnet: unexpected error: {type(exc).__name__}: {exc}")


class Job:
    """A cancel event plus the running worker, so a Stop/Cancel button can end it."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.worker = None

    def stop(self) -> None:
        self.cancel.set()

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running


def as_array(data) -> np.ndarray:
    """Layer data as a numpy array (multiscale: the full-resolution level)."""
    if isinstance(data, (list, tuple)):  # multiscale
        data = data[0]
    return data


_DONE = object()


def relay(fn: Callable[[Callable[[Any], None]], Any]):
    """Run ``fn(emit)`` in a thread of its own; yield what it emits; return its result.

    A generator body for napari's ``thread_worker``: the core reports progress through
    ``emit`` from its thread, and the worker hands each item to the UI thread as
    ``yielded``, so progress bars and layers are only touched there. Errors come out
    as :class:`JobError` (superqt's workers swallow RuntimeErrors such as Cancelled).
    """
    q: queue.Queue = queue.Queue()
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn(q.put)
        except BaseException as e:  # handed to the worker below
            box["error"] = e
        finally:
            q.put(_DONE)

    threading.Thread(target=target, daemon=True).start()
    while (item := q.get()) is not _DONE:
        yield item
    if "error" in box:
        raise JobError(box["error"])
    return box["result"]


class JobPanel:
    """Run and Cancel for a panel whose job reports ``progress(done, total)``.

    A mixin (before the magicgui container) for widgets with ``run_btn``,
    ``cancel_btn`` and ``status``: the job runs in a worker thread behind a napari
    progress bar, the buttons follow it, and ``busy`` stays True until its result
    (or error) has been handled.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.job = Job()
        self.busy = False

    def _start(
        self,
        fn: Callable[[Callable[[int, int], None], threading.Event], Any],
        desc: str,
        on_result: Callable[[Any], None],
        running: str = "running...",
    ) -> None:
        """Start ``fn(progress, cancel)``; ``on_result`` gets what it returns."""
        job = Job()
        self.job = job

        @thread_worker
        def work():
            return (yield from relay(lambda emit: fn(lambda d, n: emit((d, n)), job.cancel)))

        pbar = napari_progress(total=0, desc=desc)

        def tick(item):
            pbar.total, pbar.n = item[1], item[0]
            pbar.refresh()

        def finished():
            pbar.close()
            self.run_btn.enabled = True
            self.cancel_btn.enabled = False
            if self.status.value in (running, "cancelling..."):
                self.status.value = "stopped"
            self.busy = False

        worker = work(_ignore_errors=True)  # errors become notifications (report)
        job.worker = worker
        worker.yielded.connect(tick)
        worker.returned.connect(on_result)
        worker.errored.connect(report)
        worker.finished.connect(finished)
        self.run_btn.enabled = False
        self.cancel_btn.enabled = True
        self.status.value = running
        self.busy = True
        worker.start()

    def cancel(self, *_) -> None:
        """Stop the running job (it ends with a notice, adding no layers)."""
        self.job.stop()
        self.status.value = "cancelling..."
