"""Screenshot of the Segment panel on a layer with a pixel size, for docs/images/.

Run (needs a display; on a headless machine): xvfb-run -a python scripts/screenshot_physical.py
"""

from __future__ import annotations

import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

import napari_segnet as ns

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "physical_units.png"


def settle(seconds: float = 0.5) -> None:
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)
    # A synthetic stack taken as 0.5 µm pixels and 1.5 µm between slices.
    stack, _ = ns.data.synthetic_nuclei((16, 192, 192), seed=0, anisotropy=3.0)
    viewer.add_image(stack, name="stack", scale=(1.5, 0.5, 0.5), units="um")
    viewer.dims.set_point(0, 12.0)
    _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    seg.image.value = viewer.layers["stack"]
    seg.physical.value = 9.0  # µm: nuclei about 18 px across
    seg.run()
    settle(0.5)
    while seg.busy or seg.job.running:
        QApplication.processEvents()
        time.sleep(0.05)
    settle(1.0)
    viewer.layers["stack · nuclei · semantic"].visible = False
    viewer.reset_view()
    settle(0.5)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(seg.status.value)
    viewer.close()


if __name__ == "__main__":
    main()
