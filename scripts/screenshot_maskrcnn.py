"""Screenshot of a Mask R-CNN model in napari (docs/images/maskrcnn.png): the Segment panel
with its score threshold field after a run on the real fluorescence sample, the objects'
scores and boxes in napari's features table.

The model is a file you trained, e.g. with
``napari-segnet train ../shared/data/dsb2018 --arch maskrcnn --minutes 5 --out det.segnet``.

Run (needs a display; on a headless machine):
xvfb-run -a python scripts/screenshot_maskrcnn.py det.segnet
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari

import napari_segnet as ns
from napari_segnet._napari import _common

sys.path.insert(0, str(Path(__file__).parent))
from screenshots import settle, wait  # the other screenshots' helpers

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main(model_path: str) -> None:
    name = _common.add_session_model("detector", ns.load_model(model_path))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)
    image, _ = ns.data.real_nuclei("fluorescence")
    layer = viewer.add_image(image, name="nuclei")
    _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    seg.image.value = layer
    seg.model.value = name
    seg.score.value = 0.7
    seg.out_sem.value = False
    seg.run()
    wait(seg)
    inst = viewer.layers[f"nuclei · {name} · instances"]
    try:
        viewer.window.add_plugin_dock_widget("napari", "Features table widget")
    except Exception as e:  # older napari: no features table widget
        print(f"no features table: {e}")
    viewer.layers.selection.active = inst
    settle(2)
    viewer.screenshot(str(OUT / "maskrcnn.png"), canvas_only=False)
    viewer.close()
    print(f"wrote {OUT / 'maskrcnn.png'}: {int(inst.data.max())} objects")


if __name__ == "__main__":
    main(sys.argv[1])
