"""Jobs in worker threads: each belongs to its panel and dies with it.

A panel (:class:`JobPanel`) runs one job at a time in a napari thread worker, shows
its progress in napari's activity dock and in the panel (a bar, counts and the time
left), and hands the result to the UI thread. Closing the panel, or the viewer,
cancels the job, waits for its thread to stop and cuts it off from the panel, so
nothing touches deleted Qt objects and no result lands after the panel is gone.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.qt.threading import thread_worker
from napari.utils import progress as napari_progress
from qtpy.QtCore import QEvent, QObject, QThreadPool
from qtpy.QtWidgets import QApplication

from ..errors import Cancelled
from ._common import JobError, report

# Seconds a closing panel waits for its job's thread to notice the cancel.
STOP_TIMEOUT = 30.0

# Jobs not yet ended, so that quitting the application can stop them all.
_LIVE: weakref.WeakSet[Job] = weakref.WeakSet()
_quit_hooked = False


class Job:
    """One run of a panel: its cancel event, its worker and its state.

    ``state`` is ``"idle"`` until the worker starts, then ``"running"``,
    ``"cancelling"`` once :meth:`stop` was asked for, and finally ``"done"`` (its
    result was handled), ``"failed"`` or ``"cancelled"``. A job whose panel went
    away is ``detached``: its worker's signals no longer reach the panel.
    """

    IDLE, RUNNING, CANCELLING = "idle", "running", "cancelling"
    DONE, FAILED, CANCELLED = "done", "failed", "cancelled"

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.ended = threading.Event()  # set by the job's thread once its work has stopped
        self.worker = None
        self.pbar = None
        self.state = self.IDLE
        self.detached = False
        self.started_at = 0.0
        self.counts = (0, -1)  # the last (done, total) shown

    def start(self, worker) -> None:
        self.worker = worker
        self.state = self.RUNNING
        self.started_at = time.perf_counter()
        _LIVE.add(self)
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

    def close_bar(self) -> None:
        if self.pbar is not None:
            # The activity dock may already be gone with its viewer.
            with contextlib.suppress(RuntimeError):
                self.pbar.close()
            self.pbar = None

    def abandon(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Cancel, cut the job off from its panel and wait for its thread to stop.

        Returns whether the thread stopped within ``timeout`` seconds.
        """
        self.detached = True
        self.stop()
        self.close_bar()
        _LIVE.discard(self)
        if self.worker is None:
            return True
        return self.ended.wait(timeout)

    @property
    def running(self) -> bool:
        return self.worker is not None and not self.ended.is_set()

    @property
    def ended_without_result(self) -> bool:
        return self.state in (self.FAILED, self.CANCELLED)


_DONE = object()


def relay(fn: Callable[[Callable[[Any], None]], Any], ended: threading.Event | None = None):
    """Run ``fn(emit)`` in a thread of its own; yield what it emits; return its result.

    ``ended`` is set once ``fn`` has returned or raised, even when nobody takes its
    items any more (a worker whose Qt signals were deleted with its viewer stops
    resuming this generator).

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
            if ended is not None:
                ended.set()

    threading.Thread(target=target, daemon=True).start()
    while (item := q.get()) is not _DONE:
        yield item
    if "error" in box:
        raise JobError(box["error"])
    return box["result"]


def duration_text(seconds: float) -> str:
    """A duration for people: ``"8 s"``, ``"2 min 05 s"``, ``"1 h 03 min"``."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def tiles_text(n: int) -> str:
    """``"1 tile"``, ``"16 tiles"``."""
    return f"{n} tile" if n == 1 else f"{n} tiles"


def progress_text(done: int, total: int, elapsed: float, unit: str) -> str:
    """``"36/256 tiles, about 40 s left"``: counts, and the time left at the pace so far."""
    if total <= 0:
        return f"{done} {unit}"
    text = f"{done}/{total} {unit}"
    if 0 < done < total:
        text += f", about {duration_text(elapsed * (total - done) / done)} left"
    return text


class _CloseWatcher(QObject):
    """Tells its panel when the dock removes it (its parent becomes None)."""

    def __init__(self, panel: JobPanel) -> None:
        super().__init__(panel.native)
        self._panel = weakref.ref(panel)
        self._docked = panel.native.parent() is not None

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if obj.parent() is not None:
                self._docked = True
            elif self._docked and (panel := self._panel()) is not None:
                panel.panel_closed()
        return False


def _abandon_all() -> None:
    for job in list(_LIVE):
        job.abandon()
    # The workers emit their last signals after leaving the job.
    QThreadPool.globalInstance().waitForDone(1000)


class JobPanel:
    """Run, Cancel, a progress bar and a status line for a panel with a worker job.

    A mixin (before the magicgui container): it makes ``run_btn``, ``cancel_btn``,
    ``bar`` and ``status`` (:attr:`job_controls`, for the panel to place), runs each
    job in a worker thread behind a napari progress bar, and keeps ``busy`` True until
    the job's result (or error) has been handled. The status shows the ``running``
    text with counts and the time left, then :attr:`cancelling_text`, then whatever
    the result handler shows, or the error's one-line message.

    The job belongs to the panel: when the panel is closed (its dock removed, or the
    viewer closed) it is cancelled, and the panel waits for its thread to stop.
    """

    run_text = "Run"
    run_tooltip = "Start the job in the background; napari stays responsive."
    cancel_text = "Cancel"
    cancelling_text = "cancelling..."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.job = Job()
        self.busy = False
        self.closed = False
        self.run_btn = PushButton(text=self.run_text, tooltip=self.run_tooltip)
        self.cancel_btn = PushButton(
            text=self.cancel_text,
            enabled=False,
            tooltip="Stop the running job; closing the panel stops it too.",
        )
        self.bar = ProgressBar(value=0, min=0, max=1, visible=False, label="progress")
        self.bar.tooltip = "How far the job is (the same bar is in napari's activity dock)."
        self.status = Label(value="", label="status")
        self._watcher = _CloseWatcher(self)
        self.native.installEventFilter(self._watcher)
        self.native.destroyed.connect(lambda *_: self.panel_closed())
        _hook_quit()

    @property
    def job_controls(self) -> list:
        return [self.run_btn, self.cancel_btn, self.bar, self.status]

    def panel_closed(self) -> None:
        """The panel is gone: stop its job without touching its widgets again."""
        if self.closed:
            return
        self.closed = True
        self.busy = False
        self.job.abandon()

    def _start(
        self,
        fn: Callable[[Callable[..., None], threading.Event], Any],
        desc: str,
        on_result: Callable[[Any], None],
        running: str = "running",
        on_yield: Callable[[Any], tuple[int, int] | None] | None = None,
        total: int = 0,
        unit: str = "steps",
    ) -> None:
        """Start ``fn(progress, cancel)`` in a worker; ``on_result`` gets what it returns.

        Without ``on_yield``, ``fn`` reports ``progress(done, total)``. With it, each
        item ``fn`` passes to ``progress`` goes to ``on_yield`` in the UI thread, which
        returns ``(done, total)`` for the progress bars (None: leave them). ``total``
        is the bars' length until the first report (0: indeterminate); ``unit`` names
        what they count.
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
            return (yield from relay(run, job.ended))

        job.pbar = napari_progress(total=total, desc=desc)

        def tick(item):
            if job.detached:
                return
            counts = on_yield(item)
            if counts is None:
                return
            done, n = counts
            if n == job.counts[1]:
                done = max(done, job.counts[0])  # the bars never go back
            job.counts = (done, n)
            self.bar.max, self.bar.value = max(n, 1), min(done, max(n, 1))
            if job.pbar is not None:
                if job.pbar.total != n:
                    job.pbar.total = n
                # update() is what moves napari's bar; its display may process events,
                # so later reports can run in here: they are newer, and win.
                job.pbar.update(job.counts[0] - job.pbar.n)
            done, n = job.counts
            if job.state == job.RUNNING:
                elapsed = time.perf_counter() - job.started_at
                self.status.value = f"{running}: {progress_text(done, n, elapsed, unit)}"

        def returned(result):
            if job.detached:
                return
            try:
                on_result(result)
            except Exception as e:  # showing the result failed: the job has no result
                errored(e)
                return
            job.succeeded()

        def errored(exc):
            if job.detached:
                return
            job.failed(exc)
            report(exc)
            original = exc.original if isinstance(exc, JobError) else exc
            self.status.value = (
                "cancelled" if job.state == job.CANCELLED else f"failed: {error_line(original)}"
            )

        def finished():
            _LIVE.discard(job)
            if job.detached:
                return
            job.close_bar()
            self.run_btn.enabled = True
            self.cancel_btn.enabled = False
            self.bar.visible = False
            self.busy = False
            self._job_finished()

        worker = work(_ignore_errors=True)  # errors become notifications (report)
        worker.yielded.connect(tick)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(finished)
        self.run_btn.enabled = False
        self.cancel_btn.enabled = True
        self.bar.max, self.bar.value = max(total, 1), 0
        self.bar.visible = True
        self.status.value = f"{running}..."
        self.busy = True
        job.start(worker)

    def _job_finished(self) -> None:
        """Called in the UI thread once a job has ended and its result was handled."""

    def cancel(self, *_) -> None:
        """Stop the running job (it ends with a notice, adding no layers)."""
        if not self.job.running:
            return
        self.job.stop()
        self.status.value = self.cancelling_text


def error_line(exc: BaseException) -> str:
    """An error as one line: its message's first line (or its type's name)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _as_progress(item: tuple[int, int]) -> tuple[int, int]:
    return item


def _hook_quit() -> None:
    global _quit_hooked
    app = QApplication.instance()
    if app is not None and not _quit_hooked:
        app.aboutToQuit.connect(_abandon_all)
        _quit_hooked = True
