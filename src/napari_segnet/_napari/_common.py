"""Helpers shared by the panels: models of this session, jobs in worker threads, errors.

Layer <-> array helpers are in :mod:`.layers`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

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
            raise SegNetError('choose a model file first (the "model file" field)')
        return load_model(path)
    return load_model(choice)


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
    """One run of a panel: its cancel event, its worker and its state.

    ``state`` is ``"idle"`` until the worker starts, then ``"running"``,
    ``"cancelling"`` once :meth:`stop` was asked for, and finally ``"done"`` (its
    result was handled), ``"failed"`` or ``"cancelled"``.
    """

    IDLE, RUNNING, CANCELLING = "idle", "running", "cancelling"
    DONE, FAILED, CANCELLED = "done", "failed", "cancelled"

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.worker = None
        self.state = self.IDLE

    def start(self, worker) -> None:
        self.worker = worker
        self.state = self.RUNNING
        worker.start()

    def stop(self) -> None:
        self.cancel.set()
        if self.state == self.RUNNING:
            self.state = self.CANCELLING

    def succeeded(self) -> None:
        self.state = self.DONE

    def failed(self, exc: BaseException) -> None:
        original = exc.original if isinstance(exc, JobError) else exc
        self.state = self.CANCELLED if isinstance(original, Cancelled) else self.FAILED

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running

    @property
    def ended_without_result(self) -> bool:
        return self.state in (self.FAILED, self.CANCELLED)


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
    """Run and Cancel for a panel whose job runs in a worker thread.

    A mixin (before the magicgui container) for widgets with ``run_btn``,
    ``cancel_btn`` and ``status``: the job runs in a worker thread behind a napari
    progress bar, the buttons follow it, and ``busy`` stays True until its result
    (or error) has been handled. The status text follows the job's state: the
    ``running`` text, then :attr:`cancelling_text`, then whatever the result handler
    shows, or :attr:`stopped_text` when the job failed or was cancelled (None: the
    text is left as it is).
    """

    cancelling_text = "cancelling..."
    stopped_text: str | None = "stopped"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.job = Job()
        self.busy = False

    def _start(
        self,
        fn: Callable[[Callable[..., None], threading.Event], Any],
        desc: str,
        on_result: Callable[[Any], None],
        running: str = "running...",
        on_yield: Callable[[Any], tuple[int, int] | None] | None = None,
        total: int = 0,
    ) -> None:
        """Start ``fn(progress, cancel)`` in a worker; ``on_result`` gets what it returns.

        Without ``on_yield``, ``fn`` reports ``progress(done, total)``. With it, each
        item ``fn`` passes to ``progress`` goes to ``on_yield`` in the UI thread, which
        returns ``(done, total)`` for the progress bar (None: leave it). ``total`` is
        the bar's length until the first report (0: indeterminate).
        """
        job = Job()
        self.job = job
        if on_yield is None:

            def run(emit):
                return fn(lambda d, n: emit((d, n)), job.cancel)

            on_yield = _as_progress
        else:

            def run(emit):
                return fn(emit, job.cancel)

        @thread_worker
        def work():
            return (yield from relay(run))

        pbar = napari_progress(total=total, desc=desc)

        def tick(item):
            counts = on_yield(item)
            if counts is not None:
                pbar.total, pbar.n = counts[1], counts[0]
                pbar.refresh()

        def returned(result):
            try:
                on_result(result)
            except Exception as e:  # showing the result failed: the job has no result
                errored(e)
                return
            job.succeeded()

        def errored(exc):
            job.failed(exc)
            report(exc)

        def finished():
            pbar.close()
            self.run_btn.enabled = True
            self.cancel_btn.enabled = False
            if job.ended_without_result and self.stopped_text is not None:
                self.status.value = self.stopped_text
            self.busy = False

        worker = work(_ignore_errors=True)  # errors become notifications (report)
        worker.yielded.connect(tick)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        self.run_btn.enabled = False
        self.cancel_btn.enabled = True
        self.status.value = running
        self.busy = True
        job.start(worker)

    def cancel(self, *_) -> None:
        """Stop the running job (it ends with a notice, adding no layers)."""
        self.job.stop()
        self.status.value = self.cancelling_text


def _as_progress(item: tuple[int, int]) -> tuple[int, int]:
    return item
