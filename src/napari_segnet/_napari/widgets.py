"""The dock widgets contributed through napari.yaml."""

from .segment_widget import SegmentWidget
from .tools_widgets import CRFWidget, WeightMapWidget
from .train_widget import TrainWidget

__all__ = ["CRFWidget", "SegmentWidget", "TrainWidget", "WeightMapWidget"]
