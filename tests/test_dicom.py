"""DICOM series read with the geometry dcm2niix (the field's reference converter) gives them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _dicom import ORIENTATIONS, write_series
from napari_segxai.core.io.dicom import DicomError, read_series, read_study

pytest.importorskip("pydicom")


def _volume(shape=(20, 24, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, size=shape).astype(np.float32)


def _dcm2niix(series: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir(parents=True, exist_ok=True)
    binary = Path(sys.executable).parent / "dcm2niix"
    subprocess.run([str(binary), "-z", "y", "-b", "n", "-f", "ref", "-o", str(out), str(series)],
                   check=True, capture_output=True)
    return nib.load(next(out.glob("ref*.nii.gz")))


def _world_grid(affine, shape):
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    return index @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_geometry_and_values_agree_with_dcm2niix(tmp_path, orientation):
    volume = _volume()
    folder = write_series(tmp_path / "series", volume, orientation=orientation, slope=0.5, intercept=-100.0)
    study = read_study(folder)
    assert len(study.series) == 1
    data, affine = read_series(study.series[0])
    np.testing.assert_array_equal(data, np.rint((volume + 100) / 0.5) * 0.5 - 100)
    reference = _dcm2niix(folder, tmp_path / "ref")
    ours = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    theirs = nib.as_closest_canonical(reference)
    assert ours.shape == theirs.shape
    # the same world point for every voxel (within 0.05 mm) and the same value there
    worlds = _world_grid(ours.affine, ours.shape), _world_grid(theirs.affine, theirs.shape)
    assert np.abs(worlds[0] - worlds[1]).max() <= 0.05
    np.testing.assert_allclose(np.asarray(ours.dataobj, dtype=np.float32),
                               theirs.get_fdata(dtype=np.float32), atol=1e-3)


def test_uneven_slices_and_tilt_are_refused_with_a_sentence(tmp_path):
    folder = write_series(tmp_path / "gap", _volume(), skip_slices=(5,))
    with pytest.raises(DicomError, match="unevenly spaced slices .* a slice is missing"):
        read_series(read_study(folder).series[0])


def test_localisers_and_non_image_files_are_left_out_with_a_note(tmp_path):
    write_series(tmp_path / "study" / "t1", _volume(), number=3)
    write_series(tmp_path / "study" / "loc", _volume((20, 24, 2)), number=1, description="localizer")
    study = read_study(tmp_path / "study")
    assert [s.number for s in study.series] == [3]
    assert any("series 1 (localizer) left out" in n for n in study.notes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomError, match="no DICOM files"):
        read_study(tmp_path / "empty")


def test_a_truncated_file_is_named(tmp_path):
    folder = write_series(tmp_path / "series", _volume())
    broken = sorted(folder.iterdir())[3]
    broken.write_bytes(broken.read_bytes()[:300])
    with pytest.raises(DicomError, match=str(broken.name)):
        read_series(read_study(folder).series[0])
