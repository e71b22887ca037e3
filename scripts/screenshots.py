"""Screenshots of every widget in a real napari viewer, for docs/images/.

Run (needs a display; on a headless machine): xvfb-run -a python scripts/screenshots.py
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

import napari_segnet as ns

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


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)

    # Segment: the bundled model on a real fluorescence image, probabilities too.
    image, _ = ns.data.real_nuclei("fluorescence")
    viewer.add_image(image, name="nuclei (DSB2018)")
    _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    seg.image.value = viewer.layers["nuclei (DSB2018)"]
    seg.out_prob.value = True
    seg.run()
    wait(seg)
    viewer.layers["nuclei (DSB2018) · nuclei · semantic"].visible = False
    viewer.screenshot(str(OUT / "segment.png"), canvas_only=False)

    # CRF refine of that run's probabilities (the panel proposes image and mode).
    viewer.window.remove_dock_widget("all")
    _, crf = viewer.window.add_plugin_dock_widget("napari-segnet", "CRF refine")
    crf.run()
    wait(crf)
    for lay in viewer.layers:
        lay.visible = lay.name in ("nuclei (DSB2018)", "nuclei (DSB2018) · nuclei CRF · semantic")
    viewer.screenshot(str(OUT / "crf.png"), canvas_only=False)

    # Boundary weight map of the ground truth.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample("napari-segnet", "nuclei")
    _, wm = viewer.window.add_plugin_dock_widget("napari-segnet", "Boundary weight map")
    wm.labels.value = viewer.layers["nuclei ground truth"]  # the preview shows at once
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
    tr.epochs.value = 6
    tr.start()
    wait(tr)
    viewer.screenshot(str(OUT / "train.png"), canvas_only=False)

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
