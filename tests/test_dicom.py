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


def _linear_world_volume(shape, orientation, spacing, origin):
    """Values of f(world) = 100 + x + 2y + 3z (mm, RAS) at each voxel of a series' grid: trilinear resampling is exact."""
    from _dicom import ORIENTATIONS

    row, column = (np.array(v, float) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, column)
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    lps = (np.array(origin)[:, None, None, None] + row[:, None, None, None] * i * spacing[0]
           + column[:, None, None, None] * j * spacing[1] + normal[:, None, None, None] * k * spacing[2])
    x, y, z = -lps[0], -lps[1], lps[2]
    return (100 + x + 2 * y + 3 * z).astype(np.float32)


def _study(root: Path) -> Path:
    """Four series of one study on different grids (axial, axial, coronal, oblique) and a localiser."""
    grids = {"T1_MPRAGE": ("axial HFS", (1.0, 1.0, 2.0), (-12.0, -14.0, -10.0), (24, 28, 12), 3),
             "T1 MPRAGE POST GD": ("axial HFS", (1.0, 1.0, 2.0), (-12.0, -14.0, -10.0), (24, 28, 12), 7),
             "t2_tse_cor": ("coronal", (0.8, 1.5, 1.6), (-14.0, 8.0, 16.0), (34, 24, 20), 5),
             "t2_flair_obl": ("oblique", (1.2, 1.2, 1.5), (-16.0, -4.0, 18.0), (30, 30, 22), 9)}
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    for description, (orientation, spacing, origin, shape, number) in grids.items():
        volume = _linear_world_volume(shape, orientation, spacing, origin)
        write_series(root / description.replace(" ", "_"), volume, orientation=orientation, spacing=spacing,
                     origin=origin, description=description, number=number, study_uid=study_uid, slope=0.01)
    write_series(root / "loc", _volume((24, 28, 2)), description="localizer", number=1, study_uid=study_uid)
    return root


def test_a_study_becomes_a_case_on_the_t1_grid_in_world_coordinates(tmp_path):
    from napari_segxai.core.io.nifti import load_case

    case = load_case(_study(tmp_path / "study"))
    assert case.modalities == ("t1", "t1ce", "t2", "flair")
    assert case.name.startswith("study-") and "PID" not in case.name and "Doe" not in case.name
    expected = _linear_world_volume((24, 28, 12), "axial HFS", (1.0, 1.0, 2.0), (-12.0, -14.0, -10.0))
    np.testing.assert_allclose(case.channels[0], expected, atol=0.01)
    for channel in case.channels[1:]:  # resampled onto the T1 grid: exact where the series covers it
        from scipy import ndimage

        inside = ndimage.binary_erosion(channel != 0)  # away from the series' edges, where 0 outside blends in
        assert inside.mean() > 0.1
        np.testing.assert_allclose(channel[inside], expected[inside], atol=0.05)


def test_ambiguous_series_are_refused_with_candidates_and_chosen_with_series(tmp_path, capsys):
    from napari_segxai.cli import main
    from napari_segxai.core.io.nifti import load_case

    study = _study(tmp_path / "study")
    write_series(study / "t2_again", _volume(), description="T2 BLADE", number=11)
    with pytest.raises(DicomError, match=r"Several series could be t2: series 5 \(t2_tse_cor\); series 11 \(T2 BLADE\)"):
        load_case(study)
    case = load_case(study, series={"t1": "3", "t1ce": "7", "t2": "5", "flair": "9"})
    assert case.modalities == ("t1", "t1ce", "t2", "flair")
    out = tmp_path / "out"
    assert main(["segment", str(study), "--series", "t1=3,t1ce=7,t2=5,flair=9", "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written and all(name.startswith("study-") for name in written)
    for path in out.iterdir():  # no patient data in what is written
        content = path.read_bytes()
        assert b"Doe" not in content and b"PID-4711" not in content
    assert main(["segment", str(study), "--series", "t1", "--out", str(tmp_path / "o2")]) == 2
    assert "MOD=N" in capsys.readouterr().err


def test_non_image_files_a_dicomdir_and_undecodable_pixels_get_one_sentence(tmp_path):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

    folder = tmp_path / "sr_only"
    folder.mkdir()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = generate_uid(), ExplicitVRLittleEndian
    report = FileDataset(str(folder / "SR0001.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    report.SOPClassUID, report.SOPInstanceUID, report.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "SR"
    report.SeriesInstanceUID, report.StudyInstanceUID = generate_uid(), generate_uid()
    pydicom.dcmwrite(report.filename, report, enforce_file_format=True)
    with pytest.raises(DicomError, match=r"no image series to open .*without image geometry left out \(SR\)"):
        read_study(folder)

    series = write_series(tmp_path / "compressed", _volume())
    for path in series.iterdir():  # claims JPEG 2000 without being it: no decoder can read it
        from pydicom.encaps import encapsulate

        ds = pydicom.dcmread(path)
        ds.PixelData = encapsulate([ds.PixelData])
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match="cannot be decoded .*install one such as pylibjpeg"):
        read_series(read_study(series).series[0])


def test_a_study_with_no_series_for_any_modality_lists_its_series(tmp_path):
    from napari_segxai.core.io.nifti import load_case

    write_series(tmp_path / "study" / "dwi", _volume(), description="ep2d_diff_b1000", number=4)
    with pytest.raises(DicomError, match=r"No series of this study matches a modality.*series 4 \(ep2d_diff_b1000\)"):
        load_case(tmp_path / "study")
