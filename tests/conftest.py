"""Shared fixtures: the real-data folder (skipped when absent) and tiny synthetic NIfTI cases."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest_plugins = ["pytester"]

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

# File-name templates per naming convention: canonical modality (or "seg") -> name.
NAMING_STYLES: dict[str, dict[str, str]] = {
    "brats2020": {"t1": "{case}_t1", "t1ce": "{case}_t1ce", "t2": "{case}_t2",
                  "flair": "{case}_flair", "seg": "{case}_seg"},
    "brats2023": {"t1": "{case}-t1n", "t1ce": "{case}-t1c", "t2": "{case}-t2w",
                  "flair": "{case}-t2f", "seg": "{case}-seg"},
    "toolkit": {"t1": "{case}_t1", "t1ce": "{case}_t1c", "t2": "{case}_t2",
                "flair": "{case}_fla", "seg": "{case}_seg"},
    "plain": {"t1": "T1", "t1ce": "T1POST", "t2": "T2", "flair": "FLAIR",
              "seg": "consensus_lesion_mask"},
}


@pytest.fixture(autouse=True)
def _trust_verdicts_in_tmp(tmp_path, monkeypatch):
    """Trust verdicts a test measures go to its own temporary folder, never the user's cache or another test's."""
    from napari_segxai.core.trust import verdict

    monkeypatch.setattr(verdict, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv("SEGXAI_AUTO_TRUST", "0")  # the Explain widget checks only when a test asks it to


@pytest.fixture
def realdata() -> Path:
    """The shared folder of real MRI cases; the test is skipped when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent")
    return REALDATA


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write a NIfTI with the affine as both sform and qform (fixture helper, not product code)."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


@pytest.fixture
def nifti_writer():
    """The ``write_nifti(array, affine, path)`` helper, for tests that build odd files."""
    return write_nifti


def tiny_label(shape=(16, 16, 16), values=(1, 2, 4)) -> np.ndarray:
    """A nested spherical 'tumour' label: outer shell values[1], rim values[2], core values[0]."""
    grid = np.indices(shape).astype(np.float32)
    centre = np.array([(s - 1) / 2 for s in shape], dtype=np.float32).reshape(-1, 1, 1, 1)
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    scale = min(shape) / 16
    label = np.zeros(shape, np.int16)
    label[r < 6 * scale] = values[1]
    label[r < 4 * scale] = values[2]
    label[r < 2 * scale] = values[0]
    return label


@pytest.fixture
def tiny_label_maker():
    """The ``tiny_label(shape, values)`` helper, for tests that write labels of their own."""
    return tiny_label


@pytest.fixture
def tiny_case_dir(tmp_path):
    """Factory writing a small synthetic multimodal NIfTI case folder and returning its path.

    Arguments: ``style`` (a key of NAMING_STYLES), ``modalities`` (canonical names to write),
    ``shape``, ``affine``, ``label`` (True, False or an int array), ``name``, ``dtype``, ``seed``,
    ``files`` (explicit canonical -> stem mapping overriding the style). Channel i holds
    ``(i + 1) * 100 + noise`` plus a bright tumour, so channels are told apart by their mean.
    """
    counter = iter(range(10_000))

    def make(
        style: str = "brats2020",
        modalities=("t1", "t1ce", "t2", "flair"),
        shape=(16, 16, 16),
        affine=None,
        label=True,
        name: str = "Case001",
        dtype=np.float32,
        seed: int = 0,
        files: dict[str, str] | None = None,
    ) -> Path:
        folder = tmp_path / f"{name}_{next(counter)}" / name
        rng = np.random.default_rng(seed)
        aff = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else np.asarray(affine, float)
        template = dict(NAMING_STYLES[style])
        if files:
            template.update(files)
        lab = tiny_label(shape) if label is True else (np.asarray(label) if label is not False else None)
        for i, modality in enumerate(modalities):
            data = (i + 1) * 100 + rng.normal(0, 5, shape)
            if lab is not None:
                data = data + 50 * (lab > 0)
            stem = template.get(modality, "{case}_" + modality).format(case=name)
            write_nifti(data.astype(dtype), aff, folder / f"{stem}.nii.gz")
        if lab is not None:
            stem = template["seg"].format(case=name)
            write_nifti(lab.astype(np.uint8 if lab.min() >= 0 and lab.max() < 256 else np.int16),
                        aff, folder / f"{stem}.nii.gz")
        return folder

    return make


@pytest.fixture(scope="session")
def nnunet_model(tmp_path_factory):
    """A real nnU-Net v2 model (2 folds) trained by nnU-Net itself on toy cases; built once per session.

    Set SEGXAI_TEST_CACHE to a folder to keep it between sessions.
    """
    from _nnunet import build_nnunet_model

    cache = os.environ.get("SEGXAI_TEST_CACHE")
    root = Path(cache) / "nnunet-toy" if cache else tmp_path_factory.mktemp("nnunet")
    return build_nnunet_model(root)
