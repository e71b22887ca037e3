"""Screenshot of the bioimage.io round trip in napari, for docs/images/export_bioimageio.png.

Run (needs a display; on a headless machine): xvfb-run -a python scripts/screenshot_bioimageio.py

The Export to bioimage.io panel writes the bundled nuclei model as a package; the
Segment panel then runs that package (chosen as a model file, so the trust checkbox
shows) on the real fluorescence sample.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import napari

import napari_segnet as ns

sys.path.insert(0, str(Path(__file__).parent))
from screenshots import OUT, wait


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1100)
    image, _ = ns.data.real_nuclei("fluorescence")
    layer = viewer.add_image(image, name="nuclei (DSB2018)")
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "nuclei.zip"
        _, exp = viewer.window.add_plugin_dock_widget("napari-segnet", "Export to bioimage.io")
        exp.model.value = "nuclei"
        exp.pkg_name.value = "napari-segnet nuclei"
        exp.authors.value = "Ada Lovelace"
        exp.test_image.value = layer
        exp.out.value = package
        exp.run()
        wait(exp)
        _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
        seg.image.value = layer
        seg.model.value = "from file..."
        seg.model_file.value = package
        seg.run()
        wait(seg)
        viewer.screenshot(str(OUT / "export_bioimageio.png"), canvas_only=False)
    print(f"wrote {OUT / 'export_bioimageio.png'}")


if __name__ == "__main__":
    main()
