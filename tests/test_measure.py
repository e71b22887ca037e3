"""ns.measure: regionprops tables in physical units, checked against numpy by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import napari_segnet as ns


def _two_objects() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((40, 50), np.int32)
    labels[2:10, 3:20] = 1
    yy, xx = np.mgrid[:40, :50]
    labels[(yy - 28) ** 2 + (xx - 30) ** 2 <= 49] = 4
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    return labels, image


def test_2d_values_match_numpy_in_physical_units():
    labels, image = _two_objects()
    before = labels.copy(), image.copy()
    spacing = (0.5, 2.0)
    df = ns.measure(labels, image, spacing=spacing)
    assert list(df["label"]) == [1, 4]
    for _, row in df.iterrows():
        mask = labels == row["label"]
        ys, xs = np.nonzero(mask)
        n = mask.sum()
        assert row["n_pixels"] == n
        assert row["area_um2"] == pytest.approx(n * 0.5 * 2.0)
        assert row["centroid_y_um"] == pytest.approx(ys.mean() * 0.5)
        assert row["centroid_x_um"] == pytest.approx(xs.mean() * 2.0)
        assert row["equivalent_diameter_um"] == pytest.approx(2 * np.sqrt(n * 1.0 / np.pi))
        assert (row["bbox_y0_px"], row["bbox_y1_px"]) == (ys.min(), ys.max() + 1)
        assert (row["bbox_x0_px"], row["bbox_x1_px"]) == (xs.min(), xs.max() + 1)
        vals = image[mask]
        assert row["mean_intensity"] == pytest.approx(vals.mean(), rel=1e-5)
        assert row["min_intensity"] == pytest.approx(vals.min())
        assert row["max_intensity"] == pytest.approx(vals.max())
        assert row["integrated_intensity"] == pytest.approx(vals.sum(), rel=1e-5)
        assert 0 <= row["eccentricity"] < 1 and 0 < row["solidity"] <= 1
    # The rectangle is solid and elongated; the disc is round.
    assert df["solidity"].iloc[0] == pytest.approx(1.0)
    assert df["eccentricity"].iloc[1] < df["eccentricity"].iloc[0]
    np.testing.assert_array_equal(labels, before[0])
    np.testing.assert_array_equal(image, before[1])


def test_pixels_without_spacing_and_channels_last():
    labels, image = _two_objects()
    rgb = np.stack([image, 2 * image], axis=-1)
    df = ns.measure(labels, rgb)
    assert "area_px2" in df and "centroid_y_px" in df
    assert "mean_intensity_c0" in df and "mean_intensity_c1" in df
    np.testing.assert_allclose(df["mean_intensity_c1"], 2 * df["mean_intensity_c0"], rtol=1e-5)


def test_3d_volume_and_time_axis():
    labels = np.zeros((6, 20, 20), np.uint16)
    labels[1:5, 2:8, 3:9] = 2
    df = ns.measure(labels, spacing=(2.0, 0.5, 0.5))
    assert list(df.columns[:5]) == [
        "label",
        "centroid_z_um",
        "centroid_y_um",
        "centroid_x_um",
        "volume_um3",
    ]
    assert df["volume_um3"].item() == pytest.approx(4 * 6 * 6 * 2.0 * 0.25)
    assert df["centroid_z_um"].item() == pytest.approx(2.5 * 2.0)
    assert "eccentricity" not in df
    stack = np.stack([labels[2], labels[0], labels[3]])  # 2D frames, the middle one empty
    dt = ns.measure(stack, axes="TYX", spacing=0.5)
    assert list(dt["t"]) == [0, 2] and list(dt["label"]) == [2, 2]


def test_summary():
    labels, _ = _two_objects()
    df = ns.measure(labels, spacing=0.5)
    s = ns.summarize(df)
    assert s["count"] == 2
    assert s["median_area_um2"] == pytest.approx(np.median(df["area_um2"]))
    assert s["median_equivalent_diameter_um"] == pytest.approx(
        np.median(df["equivalent_diameter_um"])
    )
    assert ns.summarize(ns.measure(np.zeros((5, 5), int)))["count"] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image": np.zeros((40, 49))}, "image has shape"),
        ({"spacing": (1.0, 1.0, 1.0)}, "spacing must be"),
        ({"spacing": (1.0, 0.0)}, "spacing must be"),
        ({"spacing": -1}, "spacing must be"),
        ({"axes": "ZYX"}, "axes must be"),
    ],
)
def test_bad_arguments(kwargs, message):
    labels, _ = _two_objects()
    with pytest.raises(ns.SegNetError, match=message):
        ns.measure(labels, **kwargs)


def test_labels_must_be_integers():
    with pytest.raises(ns.SegNetError, match="integer"):
        ns.measure(np.ones((5, 5), np.float32))
    with pytest.raises(ns.SegNetError, match="negative"):
        ns.measure(-np.ones((5, 5), np.int32))
    with pytest.raises(ns.SegNetError, match="DataFrame"):
        ns.summarize({"count": 1})
    assert isinstance(ns.measure(np.ones((5, 5), np.uint8)), pd.DataFrame)
