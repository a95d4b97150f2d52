"""``benchmarks/realdata.py``: the BrainLesion test case prepared as a labelled case folder, and a dataset built from it.

The benchmark's leave-one-out Dice rests on this: enhancing must move from BraTS-2023's 3 to the
shared cases' 4, the images must be the checkout's own, and the checkout must stay as it was.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_label, write_nifti
from napari_segxai.core.io.nifti import load_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import realdata  # noqa: E402

SHAPE = (12, 12, 12)


def _checkout(root: Path, label: np.ndarray) -> Path:
    """A folder laid out as github.com/BrainLesion/BraTS at commit 528ab54 (tiny volumes)."""
    rng = np.random.default_rng(0)
    for index, stem in enumerate(realdata.BRAINLESION_IMAGES.values()):
        write_nifti(rng.random(SHAPE).astype(np.float32) + index, np.eye(4), root / "data" / "preprocessed_case" / f"{stem}.nii.gz")
    write_nifti(label.astype(np.uint8), np.eye(4), root / realdata.BRAINLESION_LABEL)
    return root


def _contents(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_case_keeps_its_images_moves_enhancing_to_4_and_trains_as_a_dataset(tmp_path):
    label = tiny_label(SHAPE, values=(1, 2, 3))
    checkout = _checkout(tmp_path / "BraTS", label)
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


def test_a_wrong_checkout_is_refused_with_the_reason_and_nothing_written(tmp_path):
    with pytest.raises(ValueError, match="checked out at commit 528ab54"):
        realdata.prepare_brainlesion(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    odd = _checkout(tmp_path / "odd", tiny_label(SHAPE, values=(1, 2, 5)))
    with pytest.raises(ValueError, match="expected BraTS-2023 labels 0-3"):
        realdata.prepare_brainlesion(odd, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    good = _checkout(tmp_path / "good", tiny_label(SHAPE, values=(1, 2, 3)))
    realdata.prepare_brainlesion(good, tmp_path / "out")
    with pytest.raises(ValueError, match="exists"):
        realdata.prepare_brainlesion(good, tmp_path / "out")
