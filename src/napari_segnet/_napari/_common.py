"""Helpers shared by the panels: models of this session, errors, tooltips.

Jobs in worker threads are in :mod:`.jobs`, layer <-> array helpers in :mod:`.layers`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_error, show_info

from ..errors import Cancelled, SegNetError
from ..io.bundled import available_models, load_model
from ..models import SegNet

# Models trained in this napari session, by name: the Segment widget lists them.
SESSION_MODELS: dict[str, SegNet] = {}
_listeners: list[Callable[[], None]] = []


def add_session_model(name: str, model: SegNet) -> str:
    """Register a trained model so every Segment widget offers it; returns its name.

    A name already taken gets a number (``"unet on cells #2"``); the model's
    ``meta["name"]`` is set to it, so saved files and result layers carry it.
    """
    base, k = name, 2
    while name in SESSION_MODELS:
        name = f"{base} #{k}"
        k += 1
    model.meta["name"] = name
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


def model_name(choice: str, path, model: SegNet) -> str:
    """The model's own name for result layers: its session name, stored name or file name."""
    if choice in SESSION_MODELS:
        return choice
    stored = model.meta.get("name")
    if stored:
        return str(stored)
    if choice == "from file...":
        return Path(str(path)).stem
    return choice


def resolve_model(choice: str, path, trust_code: bool = False) -> SegNet:
    """The model a panel's picker names; ``trust_code`` goes to bioimage.io packages."""
    if choice in SESSION_MODELS:
        return SESSION_MODELS[choice]
    if choice == "from file...":
        if not path or str(path) in (".", ""):
            raise SegNetError('choose a model file first (the "model file" field)')
        return load_model(path, trust_code=trust_code)
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
