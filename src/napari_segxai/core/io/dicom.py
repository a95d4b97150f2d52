"""DICOM series as volumes: files grouped into series, geometry from the slice positions, values rescaled.

A folder (searched recursively) is read header by header with pydicom; files are grouped by
SeriesInstanceUID and, inside one UID, by ImageOrientationPatient (one stack per orientation).
Localisers, scouts and derived images (ImageType LOCALIZER / DERIVED, or fewer than three slices)
are left out, with a note saying which. Geometry comes from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing: slices are ordered along the slice normal and their
spacing is taken from their positions (never from SliceThickness). A stack whose slices are not
evenly spaced, or whose positions do not follow the normal (gantry tilt), is refused with a
sentence. Values are stored * RescaleSlope + RescaleIntercept.

The affine maps voxel indices (column, row, slice) to RAS millimetres, as nibabel and dcm2niix
write NIfTI (DICOM's LPS with the first two axes negated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

#: Relative tolerance on slice spacing before a stack counts as unevenly spaced.
SPACING_TOLERANCE = 0.01
#: Largest angle (degrees) between the slice normal and the slice-to-slice step (gantry tilt).
TILT_TOLERANCE_DEG = 0.5
_LEFT_OUT = ("LOCALIZER", "SCOUT", "DERIVED", "SECONDARY")


class DicomError(ValueError):
    """A DICOM input that cannot be read as a volume; the message names the file or series."""


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """One stack of slices: its identity, descriptive attributes and files in slice order."""

    uid: str
    study_uid: str
    number: Optional[int]
    description: str
    protocol: str
    files: tuple[Path, ...]
    orientation: tuple[float, ...]
    attributes: dict = field(default_factory=dict, repr=False)  # sequence and contrast attributes for mapping

    @property
    def label(self) -> str:
        """How a person names the series: number and description."""
        return f"series {self.number if self.number is not None else '?'} ({self.description or self.protocol or self.uid})"


@dataclass(frozen=True, eq=False)
class Study:
    """The usable series of a folder and the notes on what was left out."""

    series: tuple[DicomSeries, ...]
    notes: tuple[str, ...]


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise DicomError("Reading DICOM needs pydicom, which is not installed; install it with: pip install pydicom.") from err
    return pydicom


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_study(folder: str | Path) -> Study:
    """The image series in ``folder`` (recursively); DicomError with a sentence when there is none."""
    pydicom = _pydicom()
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_dicom_file(p))
    if not files:
        raise DicomError(f"{folder} holds no DICOM files (none starts with the DICM marker); give a study or series folder.")
    groups: dict[tuple, list] = {}
    notes: list[str] = []
    skipped_kinds: dict[str, int] = {}
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # pydicom raises InvalidDicomError, EOFError, ... for broken files
            raise DicomError(f"DICOM file {path} cannot be read ({type(err).__name__}: {err}); it may be truncated.") from None
        if "ImageOrientationPatient" not in header or "ImagePositionPatient" not in header:  # SR, RT, ...
            sop_class = header.get("SOPClassUID") or getattr(header, "file_meta", {}).get("MediaStorageSOPClassUID")
            if sop_class is not None and "Image Storage" in getattr(sop_class, "name", "") and "SOPClassUID" not in header:
                raise DicomError(f"DICOM file {path} is incomplete (its file meta says {sop_class.name} but it holds no "
                                 "image attributes); it may be truncated: copy it again.")
            kind = str(header.get("Modality", "")) or str(header.get("SOPClassUID", "unknown"))
            skipped_kinds[kind] = skipped_kinds.get(kind, 0) + 1
            continue
        orientation = tuple(round(float(v), 4) for v in header.ImageOrientationPatient)
        key = (str(header.SeriesInstanceUID), orientation)
        groups.setdefault(key, []).append((path, header))
    for kind, count in skipped_kinds.items():
        notes.append(f"{count} file{'s' if count > 1 else ''} without image geometry left out ({kind}).")
    series = []
    for (uid, orientation), members in groups.items():
        first = members[0][1]
        image_type = [str(v).upper() for v in first.get("ImageType", [])]
        number = int(first.SeriesNumber) if first.get("SeriesNumber") not in (None, "") else None
        candidate = DicomSeries(
            uid=uid, study_uid=str(first.get("StudyInstanceUID", "")), number=number, description=str(first.get("SeriesDescription", "")),
            protocol=str(first.get("ProtocolName", "")), files=tuple(p for p, _ in members), orientation=orientation,
            attributes={"ScanningSequence": str(first.get("ScanningSequence", "")),
                        "SequenceName": str(first.get("SequenceName", "")),
                        "ContrastBolusAgent": str(first.get("ContrastBolusAgent", "")),
                        "InversionTime": first.get("InversionTime"), "EchoTime": first.get("EchoTime"),
                        "RepetitionTime": first.get("RepetitionTime"), "ImageType": image_type},
        )
        left_out = [t for t in _LEFT_OUT if t in image_type]
        if left_out or len(members) < 3:
            why = f"ImageType {'/'.join(left_out)}" if left_out else f"{len(members)} slice{'s' if len(members) > 1 else ''}"
            notes.append(f"{candidate.label} left out ({why}: a localiser or derived image).")
            continue
        series.append(candidate)
    if not series:
        raise DicomError(f"{folder} holds no image series to open ({'; '.join(notes) or 'no image files'}).")
    series.sort(key=lambda s: (s.number is None, s.number or 0, s.uid))
    return Study(tuple(series), tuple(notes))


#: Uncompressed little-endian transfer syntaxes, whose pixels are read straight from the bytes.
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _pixels(dataset) -> np.ndarray:
    """One slice (rows, columns) as float32: straight from the bytes when uncompressed, else pydicom's decoders."""
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    bits = int(dataset.get("BitsAllocated", 0))
    if syntax in _NATIVE and bits in (8, 16, 32) and int(dataset.get("SamplesPerPixel", 1)) == 1:
        kind = "i" if int(dataset.get("PixelRepresentation", 0)) else "u"
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        raw = np.frombuffer(dataset.PixelData, dtype=f"<{kind}{bits // 8}", count=rows * columns)
        return raw.reshape(rows, columns).astype(np.float32)
    return dataset.pixel_array.astype(np.float32)


def read_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """The volume (columns, rows, slices) float32 and its voxel-to-RAS affine; DicomError naming the series."""
    pydicom = _pydicom()
    datasets = []
    for path in series.files:
        try:
            datasets.append(pydicom.dcmread(path))
        except Exception as err:
            raise DicomError(f"DICOM file {path} of {series.label} cannot be read ({err}); it may be truncated.") from None
    row = np.array([float(v) for v in datasets[0].ImageOrientationPatient[:3]])
    column = np.array([float(v) for v in datasets[0].ImageOrientationPatient[3:]])
    normal = np.cross(row, column)
    positions = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    order = np.argsort(positions @ normal, kind="stable")
    datasets = [datasets[i] for i in order]
    positions = positions[order]
    distances = positions @ normal
    steps = np.diff(distances)
    if np.any(np.abs(steps) < 1e-4):
        raise DicomError(f"{series.label} has two slices at the same position; it holds several stacks (echoes or "
                         "time points) that napari-segxai cannot tell apart.")
    step = float(np.median(steps))
    if np.any(np.abs(steps - step) > SPACING_TOLERANCE * abs(step)):
        gaps = sorted({round(float(s), 3) for s in steps})
        raise DicomError(f"{series.label} has unevenly spaced slices ({', '.join(map(str, gaps[:4]))} mm apart): a "
                         "slice is missing or the series mixes stacks; export the whole series again.")
    shift = positions[-1] - positions[0]
    cosine = abs(float(shift @ normal)) / max(float(np.linalg.norm(shift)), 1e-9)
    if np.degrees(np.arccos(min(cosine, 1.0))) > TILT_TOLERANCE_DEG:
        raise DicomError(f"{series.label} was acquired with a tilted gantry (its slices are shifted "
                         f"{np.degrees(np.arccos(min(cosine, 1.0))):.1f} degrees off their normal); napari-segxai does not "
                         "correct gantry tilt: convert it with dcm2niix first.")
    shapes = {(int(d.Rows), int(d.Columns)) for d in datasets}
    if len(shapes) > 1:
        raise DicomError(f"{series.label} mixes slice sizes {sorted(shapes)}; export the series again.")
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    try:
        slices = [_pixels(d) * float(d.get("RescaleSlope", 1) or 1) + float(d.get("RescaleIntercept", 0) or 0)
                  for d in datasets]
    except Exception as err:  # pydicom raises RuntimeError/NotImplementedError for missing decoders
        syntax = datasets[0].file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(":. ")
        raise DicomError(f"The pixels of {series.label} cannot be decoded ({name}: {first}); if no decoder is installed "
                         "for it, install one such as pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg, or gdcm, "
                         "else the files are damaged.") from None
    volume = np.stack(slices, axis=-1).transpose(1, 0, 2)  # (rows, columns, slices) -> (columns, rows, slices)
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = shift / (len(datasets) - 1)
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return np.ascontiguousarray(volume), affine
