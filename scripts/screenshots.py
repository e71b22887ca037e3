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

    # Train on two image/labels pairs, fine-tuning the bundled model; validation outlined.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    image, truth = ns.data.real_nuclei("fluorescence")
    viewer.add_image(image, name="nuclei (DSB2018)")
    viewer.add_labels(truth, name="nuclei (DSB2018) labels")
    synth, synth_truth = ns.data.synthetic_nuclei((512, 512), seed=1)
    viewer.add_image(synth, name="synthetic", translate=(0, 720))
    viewer.add_labels(synth_truth, name="synthetic labels", translate=(0, 720))
    _, tr = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    tr.image.value = viewer.layers["nuclei (DSB2018)"]
    tr.labels.value = viewer.layers["nuclei (DSB2018) labels"]
    tr.add_pair(viewer.layers["synthetic"], viewer.layers["synthetic labels"])
    tr.epochs.value = 3
    tr.model_name.value = "nuclei tuned"
    tr.start()
    wait(tr)
    for name in ("nuclei (DSB2018) labels", "synthetic labels"):
        viewer.layers[name].opacity = 0.3
    viewer.reset_view()
    viewer.screenshot(str(OUT / "train.png"), canvas_only=False)

    correction_recipe(viewer)

    # The 3D sample.
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample("napari-segnet", "nuclei_3d")
    viewer.dims.ndisplay = 3
    settle(1)
    viewer.screenshot(str(OUT / "sample_3d.png"), canvas_only=False)
    viewer.close()
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))}")


def dark_nuclei(seed: int):
    """Synthetic nuclei, inverted: dark objects on a bright background, with labels."""
    image, truth = ns.data.synthetic_nuclei((512, 512), seed=seed)
    return image.max() - image, truth


def correction_recipe(viewer) -> None:
    """The five steps of docs/correction.md, one screenshot each, and the AP they give.

    Image A is corrected and trained on; image B, of the same kind, is only segmented,
    before and after, and scored against its ground truth. The corrections are the
    ground truth of A: a stand-in for the brush work a person would do. The images
    show dark nuclei on a bright background (as in brightfield), which the bundled
    model, trained on fluorescence, segments less well.
    """
    a, truth_a = dark_nuclei(5)
    b, truth_b = dark_nuclei(6)
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    layer_a = viewer.add_image(a, name="cells A")
    # 1. Segment with the bundled model.
    _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    seg.image.value = layer_a
    seg.run()
    wait(seg)
    viewer.layers["cells A · nuclei · semantic"].visible = False
    viewer.screenshot(str(OUT / "correction_1_segment.png"), canvas_only=False)
    # 2. Copy the result to labels and correct them (brush, eraser, fill).
    labels = seg.use_as_labels()
    viewer.layers["cells A · nuclei · instances"].visible = False
    labels.data = truth_a.astype(labels.data.dtype)
    labels.mode = "paint"
    viewer.screenshot(str(OUT / "correction_2_correct.png"), canvas_only=False)
    # 3. Fine-tune the bundled model on the corrected labels (the panel picks them).
    viewer.window.remove_dock_widget("all")
    _, tr = viewer.window.add_plugin_dock_widget("napari-segnet", "Train")
    tr.minutes.value = 2.0
    tr.model_name.value = "nuclei corrected"
    tr.start()
    wait(tr)
    viewer.screenshot(str(OUT / "correction_3_fine_tune.png"), canvas_only=False)
    # 4. Segment a new image with the bundled and the fine-tuned model.
    layer_b = viewer.add_image(b, name="cells B")
    for lay in viewer.layers:
        lay.visible = lay.name == "cells B"
    name = tr.trained_name
    viewer.window.remove_dock_widget("all")
    _, seg = viewer.window.add_plugin_dock_widget("napari-segnet", "Segment")
    seg.image.value = layer_b
    seg.run()
    wait(seg)
    seg.model.value = name
    seg.run()
    wait(seg)
    viewer.layers[f"cells B · {name} · semantic"].visible = False
    viewer.screenshot(str(OUT / "correction_4_segment_again.png"), canvas_only=False)
    # 5. Compare: before and after side by side (grid mode).
    before = viewer.layers["cells B · nuclei · instances"]
    after = viewer.layers[f"cells B · {name} · instances"]
    for lay in viewer.layers:
        lay.visible = lay in (before, after)
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari 0.9 moved it
    grid.enabled = True
    viewer.reset_view()
    settle(1)
    viewer.screenshot(str(OUT / "correction_5_compare.png"), canvas_only=False)
    grid.enabled = False
    ap = [ns.metrics.average_precision(truth_b, lay.data) for lay in (before, after)]
    print(f"image B, AP@0.5 against its ground truth: bundled {ap[0]:.3f}, fine-tuned {ap[1]:.3f}")


if __name__ == "__main__":
    main()
