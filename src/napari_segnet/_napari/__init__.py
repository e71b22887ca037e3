"""The napari layer: widgets and sample data. Thin shells over the core."""
