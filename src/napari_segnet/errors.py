"""Exceptions raised by napari-segnet."""

from __future__ import annotations


class SegNetError(ValueError):
    """Base class for user-facing errors (bad input, bad parameters)."""


class Cancelled(RuntimeError):
    """Raised when a long job is stopped through its ``cancel`` event."""


class ModelFileError(SegNetError):
    """A model file is missing, corrupt, not a napari-segnet file, or of an unknown version."""


class ModelConfigError(SegNetError):
    """An architecture, its options or its dimensions are not valid for ``build_model``."""


class NotAModelError(SegNetError, TypeError):
    """Something other than a napari-segnet model was given where a model is needed.

    Also a ``TypeError``, which is what such a call raised before.
    """


class SegNetWarning(UserWarning):
    """Something was done to the input on the user's behalf (e.g. RGB turned to grey)."""
