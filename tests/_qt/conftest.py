"""Fixtures for the napari-side tests: a tiny LPS-oriented case folder and a tiny untrained model card."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

MODALITIES = ("t1", "t1ce", "t2", "flair")
SHAPE = (16, 16, 12)
# LPS storage (as in BraTS/TCGA files): x and y axes flipped, 2 x 2 x 2.5 mm voxels, shifted origin.
LPS_AFFINE = np.array(
    [[-2.0, 0.0, 0.0, 30.0], [0.0, -2.0, 0.0, 25.0], [0.0, 0.0, 2.5, -10.0], [0.0, 0.0, 0.0, 1.0]]
)


def write_tiny_case(folder: Path, affine: np.ndarray = LPS_AFFINE, seed: int = 0) -> Path:
    """A BraTS-style folder: four modalities with a bright blob, and a 1/2/4 label."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.indices(SHAPE).astype(np.float32)
    centre = np.array([10, 6, 5], dtype=np.float32).reshape(3, 1, 1, 1)
    distance = np.sqrt(((grid - centre) ** 2).sum(0))
    label = np.zeros(SHAPE, np.int16)
    label[distance < 4] = 2
    label[distance < 2.5] = 4
    label[distance < 1.2] = 1
    for index, modality in enumerate(MODALITIES):
        volume = 100 + 10 * rng.standard_normal(SHAPE).astype(np.float32)
        volume += (index + 1) * 40.0 * (label > 0)
        nib.save(nib.Nifti1Image(volume, affine), folder / f"{folder.name}_{modality}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), folder / f"{folder.name}_seg.nii.gz")
    return folder


def write_tiny_card(folder: Path, roi: int = 8) -> Path:
    """A card for an untrained two-level MONAI UNet (4 modalities in, 4 BraTS classes out)."""
    import torch
    import yaml

    from napari_segxai.core.model.architectures import create_network
    from napari_segxai.core.model.weights import save_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {
        "spatial_dims": 3, "in_channels": 4, "out_channels": 4,
        "channels": [4, 8], "strides": [2], "num_res_units": 0,
    }
    torch.manual_seed(0)
    network = create_network("UNet", kwargs)
    save_state_dict(network.state_dict(), folder / "weights.safetensors")
    card = {
        "name": "tiny-untrained",
        "description": "An untrained two-level UNet for tests.",
        "architecture": "UNet",
        "kwargs": kwargs,
        "weights": "weights.safetensors",
        "spatial_dims": 3,
        "modalities": list(MODALITIES),
        "classes": [
            {"name": "background", "label": 0, "color": "#000000"},
            {"name": "necrosis", "label": 1, "color": "#e6194b"},
            {"name": "edema", "label": 2, "color": "#3cb44b"},
            {"name": "enhancing", "label": 4, "color": "#ffe119"},
        ],
        "activation": "softmax",
        "preprocessing": {
            "orientation": "RAS", "spacing": None, "spacing_policy": "ignore",
            "normalization": "zscore_nonzero",
        },
        "inference": {"roi_size": [roi, roi, roi], "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian"},
    }
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    return path


QT_FIXTURES = frozenset({"qapp", "qtbot", "make_napari_viewer", "make_napari_viewer_proxy"})


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``), where no widget test may be skipped."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config, items):
    """Without a display, skip the tests that need Qt (Qt would abort the whole run); in CI, stop instead."""
    if not sys.platform.startswith("linux") or any(
        os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    ):
        return
    needs_qt = [item for item in items if QT_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if needs_qt and in_ci():
        raise pytest.UsageError(
            f"CI=true but there is no display, so {len(needs_qt)} widget tests cannot run; "
            "run the suite under xvfb-run (make test does when Xvfb is installed)."
        )
    skip = pytest.mark.skip(reason="no display: widget tests need one (run them under xvfb-run)")
    for item in needs_qt:
        item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped widget test is a failure: a test that cannot run must not pass quietly."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true and this widget test was skipped ({reason}); in CI every widget test must run."


@pytest.fixture
def tiny_case(tmp_path) -> Path:
    """A tiny LPS-oriented BraTS-style case folder."""
    return write_tiny_case(tmp_path / "Tiny_case_001")


@pytest.fixture(scope="session")
def tiny_card(tmp_path_factory) -> Path:
    """The card of a tiny untrained UNet (written once per session)."""
    return write_tiny_card(tmp_path_factory.mktemp("tiny_card"))


@pytest.fixture
def lps_affine() -> np.ndarray:
    """The affine the tiny case is stored with."""
    return LPS_AFFINE.copy()


@pytest.fixture(scope="session")
def make_tiny_card(tmp_path_factory):
    """Write a tiny untrained card with a given sliding-window size; returns its path."""

    def make(roi: int) -> Path:
        return write_tiny_card(tmp_path_factory.mktemp(f"tiny_card_roi{roi}"), roi=roi)

    return make


@pytest.fixture
def make_tiny_case(tmp_path):
    """Write the tiny case with a given affine; returns its folder."""

    def make(affine: np.ndarray, name: str = "Tiny_case_002") -> Path:
        return write_tiny_case(tmp_path / name, affine=np.asarray(affine, dtype=float))

    return make


@pytest.fixture
def notices(monkeypatch):
    """Messages the widgets, their base and their job runner send to napari's notifications, by kind."""
    import importlib
    import pkgutil

    import napari_segxai._qt as qt

    seen = {"error": [], "warning": [], "info": []}
    for info in pkgutil.iter_modules(qt.__path__):
        module = importlib.import_module(f"{qt.__name__}.{info.name}")
        for kind in seen:
            if hasattr(module, f"show_{kind}"):
                monkeypatch.setattr(module, f"show_{kind}", seen[kind].append)
    return seen
