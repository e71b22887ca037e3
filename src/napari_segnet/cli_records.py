"""What ``napari-segnet segment`` writes beside the labels: measurements, a batch
summary, and the provenance sidecar of each input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io.atomic import atomic_write
from .measure import measure, summarize, write_csv
from .provenance import jsonable, to_json

SUMMARY_NAME = "measurements_summary.csv"
MEASURABLE = ("YX", "ZYX", "TYX", "TZYX")


def intensity_for(image, labels) -> np.ndarray | None:
    """The input image laid out as ``measure`` takes it (channels last), or None when
    its shape does not match the labels."""
    image = np.asarray(image)
    shape = tuple(labels.shape)
    if image.shape == shape or image.shape[:-1] == shape:
        return image
    if image.shape[1:] == shape:  # channels first
        return np.moveaxis(image, 0, -1)
    return None


def write_measurements(path: Path, image, res, spacing=None):
    """Measure ``res.instances`` (intensities from ``image``) and write the CSV.

    Returns
    -------
    pandas.DataFrame or None
        The table; None when there are no instances or their axes cannot be measured.
    """
    if res.instances is None or res.axes not in MEASURABLE:
        return None
    labels = np.asarray(res.instances)
    table = measure(labels, intensity_for(image, labels), spacing, axes=res.axes)
    write_csv(table, path)
    return table


def write_provenance(path: Path, res, source: str, outputs: list[Path]) -> Path:
    """The run's provenance as JSON, with the input and the files written."""
    record = dict(res.provenance)
    record["input"] = {**record.get("input", {}), "source": source}
    record["outputs"] = [p.name for p in outputs]
    text = to_json(jsonable(record))
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_summary(path: Path, rows: list[dict]) -> Path:
    """One row per image (``image``, ``count``, median sizes, ...) as CSV."""
    import pandas as pd

    return write_csv(pd.DataFrame(rows), path)


__all__ = ["SUMMARY_NAME", "summarize", "write_measurements", "write_provenance", "write_summary"]
