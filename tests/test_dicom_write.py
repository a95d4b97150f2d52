"""DICOM SEG and Parametric Map output: frames land on their source images, checked with plain pydicom."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from napari_segxai.core.io.dicom import read_series, read_study  # noqa: E402
from napari_segxai.core.io.dicom_write import (  # noqa: E402
    read_parametric_map, read_seg, segment_codes, write_parametric_map, write_seg,
)

from _dicom import ORIENTATIONS, write_series  # noqa: E402

SHAPE = (12, 10, 6)  # columns, rows, slices: not square, so swapped rows and columns show
SPACING = (1.0, 1.2, 2.5)
ORIGIN = (-20.0, -30.0, -10.0)
CLASSES = [(0, "background", "#000000"), (1, "necrosis", "#ff0000"), (2, "edema", (0.0, 1.0, 0.0)),
           (4, "enhancing tumour", "#0000ff")]
TESTED = ("axial HFS", "axial HFP", "sagittal", "oblique")


def _series(folder: Path, orientation: str = "axial HFS", origin=ORIGIN, study_uid: str = "1.2.826.0.1.3680043.8.498.17"):
    """Write a test series; its files (shuffled, so no code can rely on their order), its UID and its affine."""
    volume = np.random.default_rng(0).uniform(0, 200, SHAPE).astype(np.float32)
    write_series(folder, volume, orientation=orientation, spacing=SPACING, origin=origin, study_uid=study_uid)
    series = read_study(folder).series[0]
    _, affine = read_series(series)
    files = list(series.files)
    random.Random(1).shuffle(files)
    return files, series.uid, affine


def _labels() -> np.ndarray:
    """Asymmetric blobs of three classes, one slice without any."""
    labels = np.zeros(SHAPE, np.int16)
    labels[1:4, 2:7, 0:3] = 1
    labels[6:11, 1:3, 2:5] = 2
    labels[8, 6:9, 4] = 4
    labels[2, 8, 5] = 4
    return labels


def _slice_of(path: Path, orientation: str) -> int:
    """The slice a test file was written as, from its own ImagePositionPatient and the test's geometry."""
    position = np.array([float(v) for v in pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient])
    row, column = (np.array(v, float) for v in ORIENTATIONS[orientation])
    return int(round(float((position - np.array(ORIGIN)) @ np.cross(row, column)) / SPACING[2]))


def _sources(files, orientation):
    """{SOPInstanceUID: (ImagePositionPatient, slice)} of the source files."""
    found = {}
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        found[str(header.SOPInstanceUID)] = ([float(v) for v in header.ImagePositionPatient], _slice_of(path, orientation))
    return found


def _frame_source(item):
    return item.DerivationImageSequence[0].SourceImageSequence[0]


@pytest.mark.parametrize("orientation", TESTED)
def test_seg_frames_land_on_their_source_images(tmp_path, orientation):
    files, series_uid, affine = _series(tmp_path / "t1", orientation)
    labels = _labels()
    out = write_seg(labels, CLASSES, files, affine, tmp_path / "out" / "seg.dcm", series_description="segxai labels",
                    algorithm_name="demo3d", algorithm_version="1.0")

    seg = pydicom.dcmread(out)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert seg.PatientID == "PID-4711" and seg.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.17"
    assert seg.SeriesDescription == "segxai labels"
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in sorted(segments)] == ["necrosis", "edema", "enhancing tumour"]
    assert {s.SegmentAlgorithmType for s in segments.values()} == {"AUTOMATIC"}
    assert {s.SegmentAlgorithmName for s in segments.values()} == {"demo3d"}
    value_of = {n: CLASSES[n][0] for n in segments}

    sources = _sources(files, orientation)
    pixels = seg.pixel_array.reshape(-1, SHAPE[1], SHAPE[0])
    seen = set()
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        reference = _frame_source(item)
        position, k = sources[str(reference.ReferencedSOPInstanceUID)]
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient], position,
                                   atol=1e-3)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        expected = (labels[:, :, k] == value_of[number]).T  # rows x columns, as the source image stores them
        np.testing.assert_array_equal(pixels[i].astype(bool), expected, err_msg=f"segment {number}, slice {k}")
        seen.add((number, k))
    painted = {(n, k) for n, v in value_of.items() for k in range(SHAPE[2]) if (labels[:, :, k] == v).any()}
    assert seen == painted  # every painted slice has its frame, empty ones are left out


@pytest.mark.parametrize("orientation", TESTED)
def test_parametric_map_values_land_on_their_source_images(tmp_path, orientation):
    files, series_uid, affine = _series(tmp_path / "t1", orientation)
    values = np.random.default_rng(3).normal(0, 1e-3, SHAPE).astype(np.float32)
    out = write_parametric_map(values, files, affine, tmp_path / "ig.dcm", method="Integrated Gradients",
                               target="class tumour")

    pm = pydicom.dcmread(out)
    assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert "FloatPixelData" in pm
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert pm.ContentDescription == "Integrated Gradients, class tumour"
    assert pm.SeriesDescription == "Integrated Gradients, class tumour"
    sources = _sources(files, orientation)
    pixels = pm.pixel_array.reshape(-1, SHAPE[1], SHAPE[0])
    seen = set()
    for i, item in enumerate(pm.PerFrameFunctionalGroupsSequence):
        mapping = item.RealWorldValueMappingSequence[0] if "RealWorldValueMappingSequence" in item else \
            pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert (float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)) == (1.0, 0.0)
        assert mapping.LUTExplanation == "Integrated Gradients, class tumour"
        position, k = sources[str(_frame_source(item).ReferencedSOPInstanceUID)]
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient], position,
                                   atol=1e-3)
        np.testing.assert_array_equal(pixels[i], values[:, :, k].T)
        seen.add(k)
    assert seen == set(range(SHAPE[2]))
    np.testing.assert_array_equal(read_parametric_map(out, files, affine), values)


def test_seg_reads_back_to_the_class_values_and_keeps_an_empty_class(tmp_path):
    files, _, affine = _series(tmp_path / "t1", "oblique")
    labels = _labels()
    classes = CLASSES + [(5, "resection cavity", "#ffff00")]  # no voxel: a segment without frames
    out = write_seg(labels, classes, files, affine, tmp_path / "seg.dcm", series_description="labels",
                    algorithm_name="demo3d", algorithm_version="1.0")
    assert [s.SegmentLabel for s in pydicom.dcmread(out).SegmentSequence][-1] == "resection cavity"
    np.testing.assert_array_equal(read_seg(out, files, affine, classes=classes), labels)
    numbers = read_seg(out, files[::-1], affine)
    np.testing.assert_array_equal(numbers, np.select([labels == 1, labels == 2, labels == 4], [1, 2, 3], 0))


def test_an_empty_segmentation_is_written(tmp_path):
    files, _, affine = _series(tmp_path / "t1")
    out = write_seg(np.zeros(SHAPE, np.int16), CLASSES, files, affine, tmp_path / "seg.dcm",
                    series_description="labels", algorithm_name="demo3d", algorithm_version="1.0")
    assert len(pydicom.dcmread(out).SegmentSequence) == 3
    assert not read_seg(out, files, affine).any()


def test_a_multiframe_reference_is_matched_frame_by_frame(tmp_path):
    files, _, affine = _series(tmp_path / "t1", "sagittal")
    datasets = [pydicom.dcmread(f) for f in files]
    for d in datasets:
        d.PatientSex, d.StudyDate, d.StudyTime, d.ReferringPhysicianName, d.StudyID = "O", "20240101", "120000", "", "1"
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(datasets, hd.UID(), 4, hd.UID(), 1)
    enhanced.save_as(tmp_path / "enhanced.dcm")
    labels = _labels()
    out = write_seg(labels, CLASSES, [tmp_path / "enhanced.dcm"], affine, tmp_path / "seg.dcm",
                    series_description="labels", algorithm_name="demo3d", algorithm_version="1.0")
    seg = pydicom.dcmread(out)
    frames = enhanced.PerFrameFunctionalGroupsSequence
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = frames[int(_frame_source(item).ReferencedFrameNumber) - 1]
        assert item.PlanePositionSequence[0].ImagePositionPatient == source.PlanePositionSequence[0].ImagePositionPatient
    np.testing.assert_array_equal(read_seg(out, [tmp_path / "enhanced.dcm"], affine, classes=CLASSES), labels)


def test_files_of_another_series_are_refused_with_a_sentence(tmp_path):
    files, _, affine = _series(tmp_path / "t1")
    other, _, _ = _series(tmp_path / "t2", origin=(-20.0, -30.0, -8.0))
    kwargs = dict(series_description="labels", algorithm_name="demo3d", algorithm_version="1.0")
    with pytest.raises(ValueError, match=r"does not lie on the grid.*reference series") as err:
        write_seg(_labels(), CLASSES, other, affine, tmp_path / "seg.dcm", **kwargs)
    assert str(err.value).count(". ") == 0 and str(err.value).endswith(".")
    with pytest.raises(ValueError, match="come from 2 series"):
        write_seg(_labels(), CLASSES, files[:-1] + other[:1], affine, tmp_path / "seg.dcm", **kwargs)
    with pytest.raises(ValueError, match="no file for slice"):
        write_parametric_map(np.zeros(SHAPE), files[:-1], affine, tmp_path / "pm.dcm", method="Saliency", target="edema")
    with pytest.raises(ValueError, match=r"values \[2, 4\] that no class names"):
        write_seg(_labels(), CLASSES[:2], files, affine, tmp_path / "seg.dcm", **kwargs)
    assert not (tmp_path / "seg.dcm").exists() and not (tmp_path / "pm.dcm").exists()


def test_inputs_and_existing_outputs_are_not_overwritten(tmp_path):
    files, _, affine = _series(tmp_path / "t1")
    kwargs = dict(series_description="labels", algorithm_name="demo3d", algorithm_version="1.0")
    before = files[0].read_bytes()
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        write_seg(_labels(), CLASSES, files, affine, files[0], **kwargs)
    protected = tmp_path / "t1c.nii.gz"
    protected.write_bytes(b"input")
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        write_parametric_map(np.zeros(SHAPE), files, affine, protected, method="Saliency", target="edema",
                             protected=[protected])
    assert files[0].read_bytes() == before and protected.read_bytes() == b"input"
    out = write_seg(_labels(), CLASSES, files, affine, tmp_path / "seg.dcm", **kwargs)
    first = out.read_bytes()
    with pytest.raises(ValueError, match="exists"):
        write_seg(_labels(), CLASSES, files, affine, out, **kwargs)
    assert out.read_bytes() == first
    write_seg(np.zeros(SHAPE, np.int16), CLASSES, files, affine, out, overwrite=True, **kwargs)
    assert out.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def test_validation_errors_become_one_sentence(tmp_path):
    files, _, affine = _series(tmp_path / "t1")
    with pytest.raises(ValueError, match=r"^The DICOM SEG seg\.dcm cannot be built"):
        write_seg(_labels(), CLASSES, files, affine, tmp_path / "seg.dcm", series_description="labels",
                  algorithm_name="demo3d", algorithm_version="1.0", series_number=-3)
    with pytest.raises(ValueError, match="NaN"):
        write_parametric_map(np.full(SHAPE, np.nan), files, affine, tmp_path / "pm.dcm", method="Saliency", target="x")


def test_segment_codes_follow_the_class_name():
    assert segment_codes("enhancing tumour")[1].value == "108369006"  # Neoplasm
    assert segment_codes("Edema")[1].value == "79654002"
    assert segment_codes("necrosis")[1].value == "6574001"
    assert segment_codes("lesion")[0].value == "49755003"  # Morphologically abnormal structure
    assert [c.value for c in segment_codes("white matter")] == ["85756007", "85756007"]  # Tissue
