"""Exceptions raised by napari-segnet."""

from __future__ import annotations


class SegNetError(ValueError):
    """Base class for user-facing errors (bad input, bad parameters)."""


class Cancelled(RuntimeError):
    """Raised when a long job is stopped through its ``cancel`` event."""


class ModelFileError(SegNetError):
    """A model file is missing, corrupt, not a napari-segnet file, or of an unknown version."""
