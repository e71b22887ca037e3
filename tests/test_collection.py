"""Training on a collection: the folder reader, the folder interface, augmentation, resume."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile
import torch

import napari_segnet as ns
from napari_segnet.io.collection import read_collection
from napari_segnet.training.augment import Augmentation, augment
from napari_segnet.training.data import Pair, PatchSampler, split_validation
from napari_segnet.training.targets import make_target

SMALL = {"model_options": {"depth": 2, "width": 4}, "pretrained": None, "device": "cpu"}


def write_collection(root, n=6, modalities=None, rgb=()):
    """``n`` synthetic pairs as tif under ``root`` (64-96 px, some RGB), with an index."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rows = ["id,modality"]
    for i in range(n):
        shape = (64 + 16 * (i % 3), 80)
        img, lab = ns.data.synthetic_nuclei(shape, seed=i, diameter=8 + 4 * (i % 3))
        if i in rgb:
            img = np.stack([img, img // 2, img], -1)
        tifffile.imwrite(root / "images" / f"im{i}.tif", img)
        tifffile.imwrite(root / "labels" / f"im{i}.tif", lab.astype(np.uint16))
        rows.append(f"im{i},{(modalities or ['fluorescence'])[i % len(modalities or [1])]}")
    if modalities is not None:
        (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def test_read_images_labels_and_index(tmp_path):
    plain = read_collection(write_collection(tmp_path / "a", n=3))
    assert plain.ids == ("im0", "im1", "im2") and plain.channels == 1
    assert plain.images[1].shape == plain.labels[1].shape == (80, 80)
    assert plain.modalities == (None, None, None)
    mods = ["fluorescence", "brightfield"]
    coll = read_collection(write_collection(tmp_path / "b", n=4, modalities=mods))
    assert coll.modality_counts() == {"fluorescence": 2, "brightfield": 2}
    assert read_collection(tmp_path / "b", ids=["im3"]).ids == ("im3",)


def test_mixed_channels_need_a_channel_count(tmp_path):
    root = write_collection(tmp_path / "c", n=3, rgb=(1,))
    with pytest.raises(ns.SegNetError, match=r"im1\.tif.*channels=1"):
        read_collection(root)
    grey = read_collection(root, channels=1)
    assert all(im.ndim == 2 for im in grey.images)
    rgb = read_collection(root, channels=3)
    assert rgb.axes == "YXC" and all(im.shape[-1] == 3 for im in rgb.images)


def bad_labels(root, name, array):
    tifffile.imwrite(root / "labels" / name, array)


@pytest.mark.parametrize(
    "breakage,match",
    [
        (lambda r: (r / "labels" / "im1.tif").unlink(), r"im1\.tif: image without labels"),
        (lambda r: bad_labels(r, "im0.tif", np.zeros((10, 10), np.uint16)), r"im0\.tif: labels of"),
        (lambda r: bad_labels(r, "im2.tif", -np.ones((96, 80), np.int16)), r"im2\.tif.*negative"),
        (
            lambda r: bad_labels(r, "im2.tif", np.full((96, 80), 0.5, np.float32)),
            r"im2\.tif.*non-int",
        ),
        (
            lambda r: bad_labels(r, "extra.tif", np.zeros((8, 8), np.uint16)),
            r"extra\.tif: labels without",
        ),
    ],
)
def test_bad_folders_name_the_file(tmp_path, breakage, match):
    root = write_collection(tmp_path / "d", n=3)
    breakage(root)
    before = sorted(p.name for p in root.rglob("*"))
    with pytest.raises(ns.SegNetError, match=match):
        read_collection(root)
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written


def test_empty_folder(tmp_path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    with pytest.raises(ns.SegNetError, match="holds no images"):
        read_collection(tmp_path / "e")
    with pytest.raises(ns.SegNetError, match="no 'images' folder"):
        read_collection(tmp_path)


def test_split_by_image_is_stratified():
    pairs = []
    for i in range(10):
        lab = np.ones((8, 8), np.int32)
        pairs.append(Pair(np.zeros((1, 8, 8), np.float32), lab, lab.astype(np.float32), lab, i))
    groups = ["a"] * 8 + ["b"] * 2
    train, val = split_validation(
        pairs, 0.25, (8, 8), np.random.default_rng(0), by_image=True, groups=groups
    )
    held = [groups[p.source] for p in val]
    assert sorted(held) == ["a", "a", "b"] and len(train) == 7


def test_training_on_a_folder(tmp_path):
    mods = ["fluorescence", "brightfield"]
    root = write_collection(tmp_path / "f", n=6, modalities=mods)
    aug = Augmentation(zoom=0.5, blur=0.2, invert=0.5)
    model = ns.train(
        str(root),
        None,
        epochs=1,
        steps_per_epoch=2,
        batch_size=2,
        patch_size=64,
        validation=0.34,
        diameter=16,
        augmentation=aug,
        **SMALL,
    )
    rec = model.meta["training"]
    coll = rec["collection"]
    assert coll["images"] == 6 and coll["train_images"] + coll["validation_images"] == 6
    assert coll["modalities"]["fluorescence"]["validation"] == 1
    assert coll["modalities"]["brightfield"]["validation"] == 1
    assert len(coll["validation_ids"]) == 2
    assert model.meta["diameter"] == 16
    assert rec["diameter"]["source_range"][0] < 12 < rec["diameter"]["source_range"][1]
    assert rec["augmentation"]["zoom"] == 0.5
    with pytest.raises(ns.SegNetError, match="labels=None"):
        ns.train(str(root), [np.zeros((4, 4))])
    with pytest.raises(ns.SegNetError, match="labels are needed"):
        ns.train(np.zeros((64, 64)), None)


def test_zoom_keeps_image_and_labels_aligned():
    _, lab = ns.data.synthetic_nuclei((96, 96), seed=3, diameter=14)

    def target_of(labels):
        return make_target(labels, "instances", w0=0)

    tgt, w = target_of(lab)
    image = (lab > 0).astype(np.float32)[None]  # the image is its labels
    pair = Pair(image, tgt, w, lab)
    aug = Augmentation(zoom=1.0, zoom_range=(0.5, 2.0), elastic=0.0, scale=(1, 1), shift=0)
    aug.noise, aug.gamma = 0.0, (1.0, 1.0)
    sampler = PatchSampler([pair], (64, 64), aug, np.random.default_rng(0), False, target_of)
    x, y, _ = sampler.batch(8)
    known = y != -1
    agree = ((x[:, 0] > 0.5) == (y > 0))[known].mean()
    assert agree > 0.95, agree
    # Zoom changed object sizes, and each zoomed target has a 1-px boundary class.
    assert len({int((t > 0).sum()) for t in y}) > 1
    assert set(np.unique(y)) <= {-1, 0, 1, 2}
    # Flips and rotations with the new options on move image and target together.
    img, t, _ = augment(x[0], y[0], np.ones_like(x[0, 0]), np.random.default_rng(1), aug)
    assert ((img[0] > 0.5) == (t > 0))[t != -1].mean() > 0.95


def test_intensity_options_and_defaults_unchanged():
    assert Augmentation().zoom == 0 and Augmentation().invert == 0 and Augmentation().stain == 0
    rng = np.random.default_rng(0)
    grey = rng.random((1, 32, 32)).astype(np.float32)
    t = np.zeros((32, 32), np.int64)
    only_invert = Augmentation.none()
    only_invert.invert = 1.0
    out, _, _ = augment(grey, t, t.astype(np.float32), rng, only_invert)
    np.testing.assert_allclose(out, 1 - grey, atol=1e-6)
    rgb = rng.random((3, 32, 32)).astype(np.float32)
    stain = Augmentation.none()
    stain.stain = 1.0
    out, _, _ = augment(rgb, t, t.astype(np.float32), rng, stain)
    assert out.shape == rgb.shape and 0 < np.abs(out - rgb).mean() < 0.3
    with pytest.raises(ns.SegNetError, match="probability"):
        Augmentation(zoom=2.0)


def test_resume_gives_the_uninterrupted_model(tmp_path):
    img, lab = ns.data.synthetic_nuclei((96, 96), seed=5, diameter=12)
    kw = dict(
        epochs=4,
        steps_per_epoch=2,
        batch_size=2,
        patch_size=64,
        seed=3,
        validation=0,
        augmentation=Augmentation(zoom=0.5),
        **SMALL,
    )
    whole = ns.train(img, lab, **kw)
    stop = threading.Event()

    def stop_after_two(u):
        if u.kind == "epoch" and u.epoch == 2:
            stop.set()

    ckpt = tmp_path / "ckpt"
    half = ns.train(img, lab, checkpoint=ckpt, progress=stop_after_two, cancel=stop, **kw)
    assert half.meta["training"]["epochs"] == 2
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.segnet",
        "state.json",
        "state.safetensors",
    ]
    resumed = ns.train(img, lab, resume=ckpt, **kw)
    assert resumed.meta["training"]["steps"] == whole.meta["training"]["steps"] == 8
    assert resumed.history["loss"] == pytest.approx(whole.history["loss"])
    for k, v in whole.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k]), k
    with pytest.raises(ns.SegNetError, match="differs from the checkpoint"):
        ns.train(img, lab, resume=ckpt, **{**kw, "batch_size": 3})
    with pytest.raises(ns.SegNetError, match="not a training checkpoint"):
        ns.train(img, lab, resume=tmp_path, **kw)


def test_train_a_folder_from_the_shell(tmp_path, capsys):
    from napari_segnet.cli import main

    root = write_collection(tmp_path / "g", n=4, modalities=["fluorescence"])
    common = ["--patch-size", "64", "--batch-size", "1", "--steps-per-epoch", "2"]
    common += ["--pretrained", "none", "--validation", "0"]
    common += ["--device", "cpu", "--quiet", "--checkpoint", str(tmp_path / "ck")]
    out = str(tmp_path / "m.segnet")
    assert main(["train", str(root), "--out", out, "--epochs", "1", *common]) == 0
    assert (
        main(
            [
                "train",
                str(root),
                "--out",
                out,
                "--epochs",
                "2",
                "--resume",
                str(tmp_path / "ck"),
                "--overwrite",  # the first run's model file is there
                *common,
            ]
        )
        == 0
    )
    m = ns.load_model(out)
    assert m.meta["training"]["epochs"] == 2
    assert m.meta["training"]["resumed_from"] == str(tmp_path / "ck")
    assert m.meta["training"]["collection"]["images"] == 4
    capsys.readouterr()
    # An existing model file is not replaced without --overwrite, before any training.
    assert main(["train", str(root), "--out", out, "--epochs", "1", *common]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert ns.load_model(out).meta["training"]["epochs"] == 2
    assert main(["train", "--out", str(tmp_path / "new.segnet")]) == 2
    assert "FOLDER" in capsys.readouterr().err
