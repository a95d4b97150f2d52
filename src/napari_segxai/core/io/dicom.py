"""DICOM series as volumes: files grouped into series, geometry from the slice positions, values rescaled.

A study is a folder (searched recursively), a .zip of one, or a single DICOM file (a multi-frame
series). Each file is parsed once with pydicom, its pixels left on disk (:mod:`.dicom_frames`);
the slices of single-frame files and the frames of multi-frame (enhanced) files are grouped by
SeriesInstanceUID and, inside one UID, by ImageOrientationPatient (one stack per orientation). A
UID whose slices differ in echo (EchoTime / EchoNumbers) or time point (TemporalPositionIdentifier)
is split into one stack per echo and time point, keyed ``number.echo`` (``5.2``: echo 2 of series 5),
then ``.time point``. Localisers, scouts and derived images (ImageType LOCALIZER / DERIVED, or fewer
than three slices) are left out, with a note saying which; a DICOMDIR is an index and is skipped.

Geometry comes from ImagePositionPatient, ImageOrientationPatient and PixelSpacing (of each frame,
for multi-frame files): slices are ordered along the slice normal and their spacing is taken from
their positions (never from SliceThickness). A stack whose slices are not evenly spaced, or whose
positions do not follow the normal (gantry tilt), is refused with a sentence. Values are stored *
RescaleSlope + RescaleIntercept.

The affine maps voxel indices (column, row, slice) to RAS millimetres, as nibabel and dcm2niix
write NIfTI (DICOM's LPS with the first two axes negated).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .dicom_frames import DicomError, Frame, frames_of, parse, read_pixels

__all__ = ["DicomError", "DicomSeries", "Study", "is_dicom_file", "is_dicom_input", "read_series", "read_study"]

#: Relative tolerance on slice spacing before a stack counts as unevenly spaced.
SPACING_TOLERANCE = 0.01
#: Largest angle (degrees) between the slice normal and the slice-to-slice step (gantry tilt).
TILT_TOLERANCE_DEG = 0.5
_LEFT_OUT = ("LOCALIZER", "SCOUT", "DERIVED", "SECONDARY")
_DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """One stack of slices: its identity, descriptive attributes, files and slices (frames)."""

    uid: str
    study_uid: str
    number: Optional[int]
    description: str
    protocol: str
    files: tuple[Path, ...]
    orientation: tuple[float, ...]
    attributes: dict = field(default_factory=dict, repr=False)  # sequence and contrast attributes for mapping
    frames: tuple[Frame, ...] = field(default=(), repr=False)  # the slices, in file order; () reads ``files``
    echo: Optional[int] = None  # 1, 2, ... when the series holds several echoes
    time_point: Optional[int] = None  # 1, 2, ... when the series holds several time points
    plane: Optional[str] = None  # axial, coronal, ... when the series holds stacks in several orientations

    @property
    def key(self) -> str:
        """How a person chooses the series: its number, then ``.echo`` and ``.time point`` where it was split."""
        parts = [str(self.number) if self.number is not None else "?"]
        parts += [str(v) for v in (self.echo, self.time_point, self.plane) if v is not None]
        return ".".join(parts)

    @property
    def label(self) -> str:
        """How a person names the series: key and description (and echo or time point)."""
        text = self.description or self.protocol or self.uid
        text += f" echo {self.echo}" if self.echo is not None else ""
        text += f" time point {self.time_point}" if self.time_point is not None else ""
        text += f" {self.plane} stack" if self.plane is not None else ""
        return f"series {self.key} ({text})"


@dataclass(frozen=True, eq=False)
class Study:
    """The usable series of a folder and the notes on what was left out."""

    series: tuple[DicomSeries, ...]
    notes: tuple[str, ...]


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_input(path: str | Path, look_at: int = 20) -> bool:
    """Whether ``path`` is a DICOM file, a folder holding DICOM files or a zip holding them (looks at ``look_at`` files)."""
    path = Path(path)
    if path.is_dir():
        files = (p for p in path.rglob("*") if p.is_file())
        return any(is_dicom_file(p) for _, p in zip(range(look_at), files))
    if not path.is_file():
        return False
    if is_dicom_file(path):
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()][:look_at]
            return any(m.filename.rsplit("/", 1)[-1].upper() == "DICOMDIR" or archive.open(m).read(132)[128:] == b"DICM"
                       for m in members)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):  # not a zip, encrypted, unknown method
        return False


def _unzipped(archive: Path) -> Path:
    """The members of the zip ``archive`` extracted into a temporary folder removed when the process ends."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            size = sum(m.file_size for m in zipped.infolist())
            folder = Path(tempfile.mkdtemp(prefix="segxai-dicom-zip-"))
            if size > shutil.disk_usage(folder).free:
                shutil.rmtree(folder, ignore_errors=True)
                raise DicomError(f"{archive} unpacks to {size / 1e9:.1f} GB, more than the free space of the temporary "
                                 "folder; unpack it yourself and open the folder.")
            try:
                zipped.extractall(folder)  # member names are cleaned of absolute paths and ".."
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as err:
        raise DicomError(f"{archive} cannot be unpacked ({type(err).__name__}: {err}); give an unencrypted zip of a "
                         "study or series, or the unpacked folder.") from None
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _dicom_files(path: Path, shown: Path) -> list[Path]:
    """The DICOM files of the file or folder ``path`` (named ``shown`` in messages), sorted; DicomError when none."""
    if path.is_file():
        if not is_dicom_file(path):
            raise DicomError(f"{shown} is neither a DICOM file (no DICM marker) nor a zip; give a DICOM file, a study "
                             "folder or a zip of one.")
        return [path]
    if not path.is_dir():
        raise DicomError(f"No such file or folder: {shown}.")
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_dicom_file(p))
    if not files:
        raise DicomError(f"{shown} holds no DICOM files (none starts with the DICM marker); give a study or series folder.")
    return files


def read_study(path: str | Path) -> Study:
    """The image series of a folder (recursively), a zip of one or a multi-frame DICOM file; DicomError when there is none."""
    path = Path(path)
    if path.is_file() and not is_dicom_file(path) and zipfile.is_zipfile(path):
        folder = _unzipped(path)
        try:
            return _read_study(folder, path)
        except DicomError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return _read_study(path, path)


def _read_study(path: Path, shown: Path) -> Study:
    """:func:`read_study` of a folder or file ``path``, named ``shown`` in messages (the zip it was unpacked from)."""
    groups: dict[tuple, list[Frame]] = {}
    headers: dict[str, object] = {}
    skipped_kinds: dict[str, int] = {}
    directories = 0
    for file in _dicom_files(path, shown):
        header = parse(file)
        sop_class = header.get("SOPClassUID") or getattr(header, "file_meta", {}).get("MediaStorageSOPClassUID")
        if str(sop_class) == _DICOMDIR:
            directories += 1
            continue
        frames = frames_of(header, file)
        if not frames:  # SR, RT, ...
            if sop_class is not None and "Image Storage" in getattr(sop_class, "name", "") and "SOPClassUID" not in header:
                raise DicomError(f"DICOM file {file} is incomplete (its file meta says {sop_class.name} but it holds no "
                                 "image attributes); it may be truncated: copy it again.")
            kind = str(header.get("Modality", "")) or str(header.get("SOPClassUID", "unknown"))
            skipped_kinds[kind] = skipped_kinds.get(kind, 0) + 1
            continue
        uid = str(header.SeriesInstanceUID)
        headers.setdefault(uid, header)
        for frame in frames:
            groups.setdefault((uid, frame.orientation), []).append(frame)
    if directories and not groups and not skipped_kinds:
        raise DicomError(f"{shown} holds only a DICOMDIR (the index of a CD or DVD) and none of the image files it lists; "
                         "copy the whole disc, with its image folders, and open that.")
    notes = [f"{count} file{'s' if count > 1 else ''} without image geometry left out ({kind})."
             for kind, count in skipped_kinds.items()]
    series = []
    orientations: dict[str, list] = {}
    for uid, orientation in groups:
        orientations.setdefault(uid, []).append(orientation)
    for (uid, orientation), frames in groups.items():
        plane = _plane_name(orientation, orientations[uid]) if len(orientations[uid]) > 1 else None
        for candidate in _stacks(headers[uid], uid, orientation, frames, plane):
            image_type = candidate.attributes["ImageType"]
            left_out = [t for t in _LEFT_OUT if t in image_type]
            if left_out or len(candidate.frames) < 3:
                count = len(candidate.frames)
                if path.is_file() and not left_out:
                    raise DicomError(f"{shown} holds {count} slice{'s' if count > 1 else ''} only; give the folder of "
                                     "its series or study.")
                why = f"ImageType {'/'.join(left_out)}" if left_out else f"{count} slice{'s' if count > 1 else ''}"
                notes.append(f"{candidate.label} left out ({why}: a localiser or derived image).")
                continue
            series.append(candidate)
    if not series:
        raise DicomError(f"{shown} holds no image series to open ({'; '.join(notes) or 'no image files'}).")
    series.sort(key=lambda s: (s.number is None, s.number or 0, s.echo or 0, s.time_point or 0, s.uid))
    return Study(tuple(series), tuple(notes))


def plane_of(orientation) -> str:
    """The plane of an ImageOrientationPatient: axial, coronal, sagittal, or oblique (more than 25 degrees off)."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.abs(np.cross(row, column))
    if normal.max() < np.cos(np.radians(25)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


def _plane_name(orientation, siblings) -> str:
    """The plane of one of several orientations of a series, numbered when two share a plane (oblique2)."""
    plane = plane_of(orientation)
    same = [o for o in siblings if plane_of(o) == plane]
    return plane if len(same) == 1 else f"{plane}{same.index(orientation) + 1}"


def _stacks(header, uid: str, orientation: tuple[float, ...], frames: list[Frame],
            plane: Optional[str] = None) -> list[DicomSeries]:
    """The series of one UID and orientation: one per echo and time point where it holds several."""
    stacks: dict[tuple, list[Frame]] = {}
    for frame in frames:
        stacks.setdefault((frame.echo, frame.time_point), []).append(frame)
    echoes = sorted({echo for echo, _ in stacks})
    times = sorted({time_point for _, time_point in stacks})
    number = int(header.SeriesNumber) if header.get("SeriesNumber") not in (None, "") else None
    found = []
    for (echo, time_point), members in sorted(stacks.items()):
        attributes = {"ScanningSequence": str(header.get("ScanningSequence", "")),
                      "SequenceName": str(header.get("SequenceName", "")),
                      "ContrastBolusAgent": str(header.get("ContrastBolusAgent", "")),
                      "InversionTime": header.get("InversionTime"),
                      "EchoTime": echo[0] if echo[0] else header.get("EchoTime"),
                      "RepetitionTime": header.get("RepetitionTime"),
                      "ImageType": [str(v).upper() for v in header.get("ImageType", [])]}
        found.append(DicomSeries(
            uid=uid, study_uid=str(header.get("StudyInstanceUID", "")), number=number,
            description=str(header.get("SeriesDescription", "")), protocol=str(header.get("ProtocolName", "")),
            files=tuple(dict.fromkeys(f.path for f in members)), orientation=orientation, attributes=attributes,
            frames=tuple(members), echo=echoes.index(echo) + 1 if len(echoes) > 1 else None,
            time_point=times.index(time_point) + 1 if len(times) > 1 else None, plane=plane))
    return found


def read_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """The volume (columns, rows, slices) float32 and its voxel-to-RAS affine; DicomError naming the series."""
    frames = list(series.frames) or [f for p in series.files for f in frames_of(parse(p, series.label), p)]
    row = np.array(frames[0].cosines[:3])
    column = np.array(frames[0].cosines[3:])
    normal = np.cross(row, column)
    positions = np.array([f.position for f in frames])
    order = np.argsort(positions @ normal, kind="stable")
    frames = [frames[i] for i in order]
    positions = positions[order]
    steps = np.diff(positions @ normal)
    if np.any(np.abs(steps) < 1e-4):
        raise DicomError(f"{series.label} has two slices at the same position; it holds several stacks that differ in "
                         "neither echo nor time point, which napari-segxai cannot tell apart.")
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
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DicomError(f"{series.label} mixes slice sizes {sorted(shapes)}; export the series again.")
    row_spacing, column_spacing = frames[0].spacing
    volume = read_pixels(frames, series.label)
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = shift / (len(frames) - 1)
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return volume, affine
