"""``benchmarks/realdata.py``: the BrainLesion test case prepared as a labelled case folder, and a dataset built from it.

The benchmark's leave-one-out Dice rests on this: enhancing must move from BraTS-2023's 3 to the
shared cases' 4, the images must be the checkout's own, and the checkout must stay as it was.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from napari_segxai.core.io.nifti import load_case

# loaded from its file, not through sys.path, so no benchmark module can shadow another import
_SPEC = importlib.util.spec_from_file_location("realdata", Path(__file__).resolve().parents[1] / "benchmarks" / "realdata.py")
realdata = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(realdata)

SHAPE = (12, 12, 12)


def _label(core: int, enhancing: int) -> np.ndarray:
    """Nested cubes: oedema 2 outside, then ``enhancing``, then ``core`` in the middle."""
    label = np.zeros(SHAPE, np.uint8)
    label[2:10, 2:10, 2:10] = 2
    label[4:8, 4:8, 4:8] = enhancing
    label[5:7, 5:7, 5:7] = core
    return label


def _checkout(root: Path, label: np.ndarray, write_nifti) -> Path:
    """A folder laid out as github.com/BrainLesion/BraTS at commit 528ab54 (tiny volumes)."""
    rng = np.random.default_rng(0)
    for index, stem in enumerate(realdata.BRAINLESION_IMAGES.values()):
        write_nifti(rng.random(SHAPE).astype(np.float32) + index, np.eye(4), root / "data" / "preprocessed_case" / f"{stem}.nii.gz")
    write_nifti(label.astype(np.uint8), np.eye(4), root / realdata.BRAINLESION_LABEL)
    return root


def _contents(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_case_keeps_its_images_moves_enhancing_to_4_and_trains_as_a_dataset(tmp_path, nifti_writer):
    label = _label(core=1, enhancing=3)
    checkout = _checkout(tmp_path / "BraTS", label, nifti_writer)
    before = _contents(checkout)

    folder = realdata.prepare_brainlesion(checkout, tmp_path / "cases")

    assert folder.name == realdata.BRAINLESION
    case = load_case(folder)
    assert case.modalities == ("t1", "t1ce", "t2", "flair")
    for channel, stem in zip(case.channels, realdata.BRAINLESION_IMAGES.values()):
        written = load_case(checkout / "data" / "preprocessed_case" / f"{stem}.nii.gz").channels[0]
        np.testing.assert_array_equal(channel, written)
    expected = np.where(label == 3, 4, label)
    np.testing.assert_array_equal(case.label, expected)
    assert case.label_scheme.name == "brats-1/2/4"
    assert _contents(checkout) == before

    dataset = realdata.build(tmp_path / "dataset", [folder])
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["labels"] == realdata.LABELS and meta["numTraining"] == 1
    assert (dataset / "labelsTr" / f"{folder.name}.nii.gz").resolve() == realdata.label_path(folder).resolve()
    assert (dataset / "imagesTr" / f"{folder.name}_0003.nii.gz").resolve() == (
        checkout / "data" / "preprocessed_case" / "t2f.nii.gz").resolve()


def test_a_wrong_checkout_is_refused_with_the_reason_and_nothing_written(tmp_path, nifti_writer):
    with pytest.raises(ValueError, match="checked out at commit 528ab54"):
        realdata.prepare_brainlesion(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    odd = _checkout(tmp_path / "odd", _label(core=1, enhancing=5), nifti_writer)
    with pytest.raises(ValueError, match="expected BraTS-2023 labels 0-3"):
        realdata.prepare_brainlesion(odd, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    good = _checkout(tmp_path / "good", _label(core=1, enhancing=3), nifti_writer)
    realdata.prepare_brainlesion(good, tmp_path / "out")
    with pytest.raises(ValueError, match="exists"):
        realdata.prepare_brainlesion(good, tmp_path / "out")
