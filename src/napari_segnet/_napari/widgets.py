"""Dock widgets."""

from __future__ import annotations

from magicgui.widgets import Container, Label

from .._version import __version__
from ..models import architectures, available_models


class SegmentWidget(Container):
    """Placeholder Segment panel: shows what this installation provides.

    The interactive Segment/Train widgets replace it; until then the scripting
    API (``import napari_segnet as ns``) does the work from the napari console.
    """

    def __init__(self, viewer=None):
        super().__init__(labels=False)
        self.viewer = viewer
        models = ", ".join(available_models()) or "none bundled yet"
        self.info = Label(
            value=(
                f"napari-segnet {__version__}\n"
                f"architectures: {', '.join(architectures())}\n"
                f"bundled models: {models}\n"
                "Scripting: import napari_segnet as ns; ns.segment(image, model)"
            )
        )
        self.append(self.info)
