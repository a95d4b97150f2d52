"""DICOM reading beyond folders of single-frame files: multi-frame files, zips, DICOMDIR media, echoes."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from _dicom import assert_matches_dcm2niix, write_echoes, write_multiframe, write_series  # noqa: E402
from napari_segxai.core.io.dicom import DicomError, is_dicom_input, read_series, read_study  # noqa: E402


def _volume(shape=(20, 24, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.float32)


def _edit_frames(path: Path, edit) -> None:
    """Apply ``edit(index, frame item)`` to every PerFrameFunctionalGroupsSequence item of a multi-frame file."""
    import pydicom

    dataset = pydicom.dcmread(path)
    for index, item in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        edit(index, item)
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("orientation", ["axial HFS", "sagittal", "oblique"])
def test_a_multi_frame_file_agrees_with_dcm2niix(tmp_path, orientation):
    volume = _volume()
    path = write_multiframe(tmp_path / "mf" / "image.dcm", volume, orientation=orientation, slope=0.5, intercept=-100.0)
    for given in (path, path.parent):  # the file itself or its folder
        study = read_study(given)
        assert len(study.series) == 1 and study.series[0].files == (path,)
        data, affine = read_series(study.series[0])
        np.testing.assert_array_equal(data, np.rint((volume + 100) / 0.5) * 0.5 - 100)
    assert_matches_dcm2niix(data, affine, path.parent, tmp_path / "ref")
    single = read_series(read_study(write_series(tmp_path / "single", volume, orientation=orientation, slope=0.5,
                                                 intercept=-100.0)).series[0])
    np.testing.assert_allclose(affine, single[1], atol=1e-6)


def test_compressed_multi_frame_pixels_are_decoded_frame_by_frame(tmp_path):
    from pydicom.uid import RLELossless

    volume = _volume()
    path = write_multiframe(tmp_path / "rle" / "image.dcm", volume, transfer_syntax_uid=RLELossless,
                            orientation="coronal", slope=0.5, intercept=-100.0)
    series = read_study(path).series[0]
    assert all(frame.offset is None for frame in series.frames)  # not read straight from the bytes
    np.testing.assert_array_equal(read_series(series)[0], np.rint((volume + 100) / 0.5) * 0.5 - 100)


def test_a_multi_frame_file_gets_the_checks_of_single_frame_series(tmp_path):
    gap = write_multiframe(tmp_path / "gap" / "image.dcm", _volume(), skip_slices=(5,))
    with pytest.raises(DicomError, match="unevenly spaced slices .* a slice is missing"):
        read_series(read_study(gap).series[0])

    tilted = write_multiframe(tmp_path / "tilt" / "image.dcm", _volume())

    def shift(index, item):  # each slice 1 mm further right than the last: a tilted gantry
        position = item.PlanePositionSequence[0].ImagePositionPatient
        z = float(position[2])
        item.PlanePositionSequence[0].ImagePositionPatient = [float(position[0]) + (z + 10.0) / 2.5, position[1], z]

    _edit_frames(tilted, shift)
    with pytest.raises(DicomError, match="tilted gantry"):
        read_series(read_study(tilted).series[0])

    twice = write_multiframe(tmp_path / "twice" / "image.dcm", _volume())
    _edit_frames(twice, lambda i, item: setattr(item.PlanePositionSequence[0], "ImagePositionPatient", [0, 0, i // 2]))
    with pytest.raises(DicomError, match="two slices at the same position"):
        read_series(read_study(twice).series[0])

    unplaced = write_multiframe(tmp_path / "unplaced" / "image.dcm", _volume())
    _edit_frames(unplaced, lambda i, item: i == 3 and delattr(item, "PlanePositionSequence"))
    with pytest.raises(DicomError, match="Frame 4 of the multi-frame DICOM file .* has no plane position"):
        read_study(unplaced)


def test_echoes_of_one_series_become_series_keyed_number_dot_echo(tmp_path):
    volumes = [_volume(seed=1), _volume(seed=2)]
    folder = write_echoes(tmp_path / "dual", volumes, echo_times=(12.0, 95.0), description="pd_t2_tse", number=5)
    study = read_study(folder)
    assert [s.key for s in study.series] == ["5.1", "5.2"]
    assert [s.label for s in study.series] == ["series 5.1 (pd_t2_tse echo 1)", "series 5.2 (pd_t2_tse echo 2)"]
    assert [s.attributes["EchoTime"] for s in study.series] == [12.0, 95.0]
    for series, volume in zip(study.series, volumes):
        np.testing.assert_array_equal(read_series(series)[0], volume)

    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]
    from highdicom.legacy import LegacyConvertedEnhancedMRImage
    from pydicom.uid import generate_uid

    multi = LegacyConvertedEnhancedMRImage(datasets, series_instance_uid=generate_uid(), series_number=8,
                                           sop_instance_uid=generate_uid(), instance_number=1)
    (tmp_path / "mf").mkdir()
    multi.save_as(tmp_path / "mf" / "dual.dcm", enforce_file_format=True)
    study = read_study(tmp_path / "mf" / "dual.dcm")
    assert [s.key for s in study.series] == ["8.1", "8.2"]
    for series, volume in zip(study.series, volumes):
        np.testing.assert_array_equal(read_series(series)[0], volume)


def test_time_points_of_one_series_become_series_keyed_number_dot_time_point(tmp_path):
    import pydicom

    volumes = [_volume(seed=3), _volume(seed=4), _volume(seed=5)]
    for time_point, volume in enumerate(volumes, start=1):
        for path in write_series(tmp_path / "dynamic" / f"t{time_point}", volume, number=6, description="perf",
                                 study_uid="1.2.3").iterdir():
            dataset = pydicom.dcmread(path)
            dataset.SeriesInstanceUID, dataset.TemporalPositionIdentifier = "1.2.3.4", time_point
            dataset.save_as(path, enforce_file_format=True)
    study = read_study(tmp_path / "dynamic")
    assert [s.label for s in study.series] == [f"series 6.{t} (perf time point {t})" for t in (1, 2, 3)]
    for series, volume in zip(study.series, volumes):
        np.testing.assert_array_equal(read_series(series)[0], volume)


def test_a_series_without_its_frames_is_read_from_its_files(tmp_path):
    study = read_study(write_series(tmp_path / "series", _volume(), slope=0.5))
    data, affine = read_series(study.series[0])
    again, affine_again = read_series(dataclasses.replace(study.series[0], frames=()))
    np.testing.assert_array_equal(data, again)
    np.testing.assert_array_equal(affine, affine_again)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftover_zip_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("segxai-dicom-zip-*"))


def test_a_zip_of_a_study_opens_like_its_folder_and_is_not_modified(tmp_path):
    study = tmp_path / "study"
    write_series(study / "a", _volume(seed=1), number=3, study_uid="1.2.3")
    write_multiframe(study / "b" / "mf.dcm", _volume(seed=2), number=4, study_uid="1.2.3", orientation="sagittal")
    archive = Path(shutil.make_archive(str(tmp_path / "study"), "zip", study))
    digest = _digest(archive)
    assert is_dicom_input(archive) and is_dicom_input(study) and is_dicom_input(study / "b" / "mf.dcm")
    from_zip, from_folder = read_study(archive), read_study(study)
    assert [s.key for s in from_zip.series] == [s.key for s in from_folder.series] == ["3", "4"]
    for zipped, unzipped in zip(from_zip.series, from_folder.series):
        for (a, b) in zip(read_series(zipped), read_series(unzipped)):
            np.testing.assert_array_equal(a, b)
    assert _digest(archive) == digest


def test_bad_zips_and_single_slices_get_one_sentence_and_leave_nothing(tmp_path):
    before = _leftover_zip_folders()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    empty = Path(shutil.make_archive(str(tmp_path / "empty"), "zip", tmp_path / "notes"))
    assert not is_dicom_input(empty)
    with pytest.raises(DicomError, match="empty.zip holds no DICOM files"):
        read_study(empty)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(empty.read_bytes()[:-30])  # the central directory cut off: not a zip any more
    with pytest.raises(DicomError, match=r"broken.zip is neither a DICOM file \(no DICM marker\) nor a zip"):
        read_study(broken)
    assert _leftover_zip_folders() == before
    one = sorted(write_series(tmp_path / "series", _volume()).iterdir())[0]
    with pytest.raises(DicomError, match="holds 1 slice only; give the folder of its series or study"):
        read_study(one)
    assert not is_dicom_input(tmp_path / "notes") and not is_dicom_input(tmp_path / "missing")


def test_a_dicomdir_is_skipped_and_a_folder_with_only_a_dicomdir_gets_one_sentence(tmp_path):
    import pydicom
    from pydicom.fileset import FileSet

    series = write_series(tmp_path / "series", _volume())
    media = tmp_path / "media"
    files = FileSet()
    for path in sorted(series.iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.StudyDate, dataset.StudyTime, dataset.StudyID = "20260101", "120000", "1"  # the STUDY record needs them
        files.add(dataset)
    files.write(media)
    assert (media / "DICOMDIR").is_file()
    study = read_study(media)
    assert len(study.series) == 1 and len(study.series[0].files) == 12 and not study.notes
    for path in media.rglob("*"):
        if path.is_file() and path.name != "DICOMDIR":
            path.unlink()
    with pytest.raises(DicomError, match="holds only a DICOMDIR .* copy the whole disc"):
        read_study(media)


def test_load_case_and_the_napari_check_take_a_zip_and_a_multi_frame_file(tmp_path):
    from napari_segxai.core.io.nifti import load_case

    volume = _volume()
    path = write_multiframe(tmp_path / "mf" / "t1.dcm", volume, description="t1_mprage")
    archive = Path(shutil.make_archive(str(tmp_path / "series"), "zip", write_series(tmp_path / "series", volume)))
    for given in (path, archive):
        case = load_case(given)
        assert case.modalities == ("t1",) and case.name.startswith("study-")
        np.testing.assert_array_equal(case.channels[0], volume)
    pytest.importorskip("napari")
    from napari_segxai._reader import _looks_readable

    assert _looks_readable(path) and _looks_readable(archive) and not _looks_readable(tmp_path / "missing.zip")
