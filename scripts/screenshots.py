"""Screenshots of every widget in a real napari viewer, for docs/images/.

Run (needs a display; on a headless machine): xvfb-run -a python scripts/screenshots.py
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def settle(seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def wait(widget, timeout: float = 600) -> None:
    end = time.time() + timeout
    settle(0.2)
    while (widget.busy or widget.job.running) and time.time() < end:
        QApplication.processEvents()
        time.sleep(0.05)
    settle(0.5)


def segment_real(viewer) -> None:
    """The Segment panel on the real samples: fluorescence (nuclei) and H&E (nuclei_he)."""
    for sample, layer, out in (
        ("real_fluorescence", "nuclei (DSB2018 fluorescence)", "segment.png"),
        ("real_he", "H&E tissue (DSB2018)", "segment_he.png"),
    ):
        viewer.window.remove_dock_widget("all")
        viewer.layers.clear()
        viewer.open_sample("napari-segnet", sample)
        for lay in viewer.layers:
            lay.visible = lay.name == layer
        _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
        seg.image.value = viewer.layers[layer]  # the panel picks nuclei or nuclei_he
        seg.run()
        wait(seg)
        viewer.reset_view()
        settle(0.5)
        viewer.screenshot(str(OUT / out), canvas_only=False)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)

    segment_real(viewer)

    # Boundary weight map of the ground truth.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample("napari-segnet", "nuclei")
    _, wm = viewer.window.add_plugin_dock_widget("napari-segnet", "Boundary weight map")
    wm.labels.value = viewer.layers["nuclei ground truth"]
    wm.refresh()
    settle(3)
    viewer.layers["nuclei ground truth"].visible = False
    viewer.screenshot(str(OUT / "weight_map.png"), canvas_only=False)

    # Train from scribbles, with the live plot and preview.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample("napari-segnet", "scribbles")
    _, tr = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    tr.image.value = viewer.layers["nuclei (scribbles)"]
    tr.labels.value = viewer.layers["scribbles"]
    tr.target.value = "scribbles"
    tr.epochs.value = 6
    tr.start()
    wait(tr)
    viewer.screenshot(str(OUT / "train.png"), canvas_only=False)

    # CRF refine on an RGB image and coarse probabilities.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :320]
    gt = ((yy - 128) ** 2 + (xx - 120) ** 2 < 70**2).astype(int) + 2 * (xx > 230)
    colours = np.array([[40, 40, 40], [220, 80, 60], [70, 90, 220]])
    img = np.clip(colours[gt] + rng.normal(0, 15, (256, 320, 3)), 0, 255).astype(np.uint8)
    from scipy import ndimage as ndi

    coarse = np.stack([ndi.gaussian_filter((gt == k).astype(float), 8) for k in range(3)])
    coarse = (coarse + rng.uniform(0, 0.5, coarse.shape)).astype(np.float32)
    coarse /= coarse.sum(0, keepdims=True)
    viewer.add_image(img, name="photo", rgb=True)
    viewer.add_image(coarse, name="coarse probabilities", visible=False)
    _, crf = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    crf.image.value = viewer.layers["photo"]
    crf.prob.value = viewer.layers["coarse probabilities"]
    crf.run()
    settle(8)
    if "coarse probabilities CRF" in viewer.layers:
        viewer.layers["coarse probabilities CRF"].visible = False
    viewer.screenshot(str(OUT / "crf.png"), canvas_only=False)

    # The 3D sample.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample("napari-segnet", "nuclei_3d")
    viewer.dims.ndisplay = 3
    settle(1)
    viewer.screenshot(str(OUT / "sample_3d.png"), canvas_only=False)
    viewer.close()
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))}")


if __name__ == "__main__":
    main()
