"""Test helper: DICOM MR series written with pydicom from a volume, in any orientation (not product code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Row and column direction cosines (LPS) of the planes and patient positions the tests cover.
ORIENTATIONS = {
    "axial HFS": ([1, 0, 0], [0, 1, 0]),
    "axial HFP": ([-1, 0, 0], [0, -1, 0]),
    "axial HFDL": ([0, -1, 0], [1, 0, 0]),
    "axial HFDR": ([0, 1, 0], [-1, 0, 0]),
    "sagittal": ([0, 1, 0], [0, 0, -1]),
    "coronal": ([1, 0, 0], [0, 0, -1]),
    "oblique": ([0.9659258, 0.2588190, 0.0], [-0.0669873, 0.25, -0.9659258]),
}
POSITIONS = {"axial HFS": "HFS", "axial HFP": "HFP", "axial HFDL": "HFDL", "axial HFDR": "HFDR"}


def write_series(folder: Path, volume: np.ndarray, *, orientation: str = "axial HFS", spacing=(1.0, 1.2, 2.5),
                 origin=(-20.0, -30.0, -10.0), description: str = "t1_mprage", number: int = 3,
                 study_uid: str | None = None, slope: float = 1.0, intercept: float = 0.0,
                 patient: tuple[str, str] = ("Doe^Jane", "PID-4711"), skip_slices=()) -> Path:
    """Write ``volume`` (columns, rows, slices) as one MR series of single-frame files into ``folder``."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    row, column = (np.array(v, float) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, column)
    series_uid, study_uid = generate_uid(), study_uid or generate_uid()
    stored = np.rint((volume - intercept) / slope).astype(np.int16)
    for k in range(volume.shape[2]):
        if k in skip_slices:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid])  # one frame of reference per study
        ds.Modality, ds.PatientName, ds.PatientID = "MR", patient[0], patient[1]
        ds.PatientBirthDate, ds.AccessionNumber = "19700101", "ACC-0815"
        ds.PatientPosition = POSITIONS.get(orientation, "HFS")
        ds.SeriesDescription, ds.ProtocolName, ds.SeriesNumber, ds.InstanceNumber = description, description, number, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImageOrientationPatient = [f"{v:.7f}" for v in (*row, *column)]
        position = np.array(origin) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]  # row spacing, column spacing
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows x columns
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    return folder


def write_multiframe(path: Path, volume: np.ndarray, transfer_syntax_uid: str | None = None, **options) -> Path:
    """Write ``volume`` as one Legacy Converted Enhanced MR file at ``path`` (highdicom), from ``write_series``'s slices.

    ``transfer_syntax_uid`` (e.g. RLE Lossless) compresses the frames; default explicit VR little endian.
    """
    import tempfile

    import highdicom
    import pydicom
    from pydicom.uid import generate_uid

    with tempfile.TemporaryDirectory() as scratch:
        folder = write_series(Path(scratch), volume, **options)
        datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    image = highdicom.legacy.LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=datasets[0].SeriesInstanceUID, series_number=int(datasets[0].SeriesNumber),
        sop_instance_uid=generate_uid(), instance_number=1, transfer_syntax_uid=transfer_syntax_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path, enforce_file_format=True)
    return path


def write_echoes(folder: Path, volumes, echo_times=(12.0, 95.0), **options) -> Path:
    """Write ``volumes`` (one per echo) as one single-frame MR series whose echoes share a SeriesInstanceUID."""
    import pydicom
    from pydicom.uid import generate_uid

    series_uid = generate_uid()
    options.setdefault("study_uid", generate_uid())
    for echo, (volume, echo_time) in enumerate(zip(volumes, echo_times), start=1):
        for path in sorted(write_series(folder / f"echo{echo}", volume, **options).iterdir()):
            dataset = pydicom.dcmread(path)
            dataset.SeriesInstanceUID, dataset.EchoNumbers, dataset.EchoTime = series_uid, echo, f"{echo_time:g}"
            dataset.save_as(path, enforce_file_format=True)
    return folder


def assert_matches_dcm2niix(data: np.ndarray, affine: np.ndarray, series: Path, out: Path) -> None:
    """Every voxel of (``data``, ``affine``) lies where dcm2niix puts it (within 0.05 mm) and has its value."""
    import subprocess
    import sys

    import nibabel as nib

    out.mkdir(parents=True, exist_ok=True)
    binary = Path(sys.executable).parent / "dcm2niix"
    subprocess.run([str(binary), "-z", "y", "-b", "n", "-f", "ref", "-o", str(out), str(series)],
                   check=True, capture_output=True)
    ours = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    theirs = nib.as_closest_canonical(nib.load(next(out.glob("ref*.nii.gz"))))
    assert ours.shape == theirs.shape
    index = np.stack(np.meshgrid(*[np.arange(s) for s in ours.shape], indexing="ij"), -1).reshape(-1, 3)
    worlds = [index @ image.affine[:3, :3].T + image.affine[:3, 3] for image in (ours, theirs)]
    assert np.abs(worlds[0] - worlds[1]).max() <= 0.05
    np.testing.assert_allclose(np.asarray(ours.dataobj, dtype=np.float32), theirs.get_fdata(dtype=np.float32), atol=1e-3)
