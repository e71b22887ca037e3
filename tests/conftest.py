"""Shared fixtures: deterministic seeds, CPU unless a GPU is present, small models."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import napari_segnet as ns

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _deterministic():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds code that still uses the global RNG
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(False)
    yield


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def device() -> str:
    """The device tests run on: CUDA when present (GPU runs), otherwise CPU."""
    return os.environ.get("SEGNET_TEST_DEVICE", "cuda" if HAS_CUDA else "cpu")


def randomize_norm_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Give batch-norm layers non-trivial running statistics, as a trained model has."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if hasattr(m, "running_mean") and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


@pytest.fixture
def small_unet():
    return randomize_norm_stats(ns.build_model("unet", n_classes=3, depth=3, width=4))


@pytest.fixture
def errors(monkeypatch):
    """Notifications shown by the widgets (error and info), collected instead of shown."""
    from napari_segnet._napari import _common

    seen = []
    monkeypatch.setattr(_common, "show_error", lambda msg: seen.append(msg))
    monkeypatch.setattr(_common, "show_info", lambda msg: seen.append(msg))
    return seen
