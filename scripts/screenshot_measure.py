"""Screenshot of measurements in napari (docs/images/measure.png): the Segment panel after
a run on the real fluorescence sample at 0.65 µm per pixel, the instance layer's features
in napari's features table and one object's row in the status bar.

Run (needs a display; on a headless machine): xvfb-run -a python scripts/screenshot_measure.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
import numpy as np

import napari_segnet as ns

sys.path.insert(0, str(Path(__file__).parent))
from screenshots import settle, wait  # the other screenshots' helpers

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)
    image, _ = ns.data.real_nuclei("fluorescence")
    layer = viewer.add_image(image, name="nuclei", scale=(0.65, 0.65))
    _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    seg.image.value = layer
    seg.out_sem.value = False
    seg.run()
    wait(seg)
    inst = viewer.layers["nuclei · nuclei · instances"]
    try:
        viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    except Exception as e:  # older napari: no features table widget
        print(f"no features table: {e}")
    viewer.layers.selection.active = inst
    label = int(np.unique(inst.data)[len(np.unique(inst.data)) // 2])
    y, x = np.argwhere(inst.data == label).mean(0) * 0.65
    viewer.status = inst.get_status((y, x), world=True)
    inst.selected_label = label
    inst.show_selected_label = False
    settle(2)
    viewer.screenshot(str(OUT / "measure.png"), canvas_only=False)
    viewer.close()
    print(f"wrote {OUT / 'measure.png'}")


if __name__ == "__main__":
    main()
