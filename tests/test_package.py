"""The installed package: pure core import, manifest, console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2

import napari_segnet as ns


def test_core_import_pulls_no_qt_or_napari():
    code = (
        "import sys, napari_segnet as ns; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')]; "
        "assert not bad, bad; print(ns.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ns.__version__


def test_manifest_is_found_and_valid():
    manifest = npe2.PluginManifest.from_distribution("napari-segnet")
    assert manifest.name == "napari-segnet"
    assert manifest.display_name == "SegNet"
    assert "Segmentation" in manifest.categories
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert "Segment" in widgets
    samples = {s.key for s in manifest.contributions.sample_data}
    assert {"nuclei", "nuclei_3d"} <= samples
    # Every command points at something importable.
    for cmd in manifest.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr))


ROOT_MANIFEST = Path(__file__).parents[1] / "napari.yaml"


def test_root_manifest_is_the_package_copy_valid_and_puts_widgets_in_menus():
    package = Path(ns.__file__).parent / "napari.yaml"
    # One source of truth: the package's copy is the root file, byte for byte.
    assert package.read_bytes() == ROOT_MANIFEST.read_bytes(), (
        "src/napari_segnet/napari.yaml differs from the root napari.yaml: make it a link "
        "to ../../napari.yaml (or a copy of it)"
    )
    manifest = npe2.PluginManifest.from_file(ROOT_MANIFEST)
    manifest.validate_imports()
    menus = {
        menu: [item.command for item in items]
        for menu, items in manifest.contributions.menus.items()
    }
    widgets = {w.command for w in manifest.contributions.widgets}
    in_menus = {cmd for items in menus.values() for cmd in items}
    assert in_menus == widgets
    assert menus["napari/layers/segment"][:2] == [
        "napari-segnet.segment_widget",
        "napari-segnet.train_widget",
    ]


def test_console_script_help():
    out = subprocess.run(["napari-segnet", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "demo" in out.stdout
    out = subprocess.run(["napari-segnet", "demo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--out" in out.stdout


def test_cli_demo_runs(tmp_path):
    from napari_segnet.cli import main

    rc = main(
        ["demo", "--out", str(tmp_path), "--size", "160", "--tile-size", "48", "--device", "cpu"]
    )
    assert rc == 0
    assert (tmp_path / "probabilities.tif").exists()
