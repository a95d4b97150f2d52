"""Slices of DICOM files: where each lies, how it is rescaled and where its pixels are, for single- and multi-frame files.

A single-frame image (MR, CT, ...) is one :class:`Frame` with ImagePositionPatient,
ImageOrientationPatient, PixelSpacing and RescaleSlope/Intercept at the top of the dataset. A
multi-frame image (Enhanced MR/CT, Legacy Converted Enhanced) is one Frame per frame, each taking
PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence and
PixelValueTransformationSequence from its PerFrameFunctionalGroupsSequence item or else from the
SharedFunctionalGroupsSequence. Echo and time point (EchoTime / EchoNumbers and
TemporalPositionIdentifier; per frame MREchoSequence and FrameContentSequence, or the
UnassignedPerFrameConvertedAttributesSequence of legacy converted files) tell stacks of one series apart.

Uncompressed pixels are read straight from the file at the offset the header parse recorded, so a
file is parsed once; other transfer syntaxes are decoded by pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

#: Uncompressed little-endian transfer syntaxes, whose pixels are read straight from the bytes.
NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
#: Elements longer than this (the pixels) are skipped by the header parse and read from their offset later.
DEFER_BYTES = 4096
_PIXEL_DATA = 0x7FE00010


class DicomError(ValueError):
    """A DICOM input that cannot be read as a volume; the message names the file or series."""


def pydicom_module():
    """pydicom, or DicomError with the install command."""
    try:
        import pydicom
    except ImportError as err:
        raise DicomError("Reading DICOM needs pydicom, which is not installed; install it with: pip install pydicom.") from err
    return pydicom


@dataclass(frozen=True)
class Frame:
    """One slice: its file (and frame in it), geometry, rescale, echo and time point, and where its pixels are."""

    path: Path
    index: int  # frame in a multi-frame file; 0 for a single-frame file
    cosines: tuple[float, ...]  # ImageOrientationPatient: row then column direction (LPS)
    position: tuple[float, float, float]  # ImagePositionPatient (LPS mm) of the first pixel
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns) in mm
    shape: tuple[int, int]  # (rows, columns)
    slope: float
    intercept: float
    echo: tuple[float, int]  # (echo time ms, echo number); (0, 0) when not given
    time_point: int  # TemporalPositionIdentifier / TemporalPositionIndex; 0 when not given
    offset: Optional[int]  # byte offset of the uncompressed pixels; None when they must be decoded
    dtype: str  # numpy dtype of the stored pixels ("<i2", ...) when offset is set

    @property
    def orientation(self) -> tuple[float, ...]:
        """The direction cosines rounded to 4 decimals: frames with equal orientation form one stack."""
        return tuple(round(v, 4) for v in self.cosines)


def _first(value) -> float:
    """A number from a DS/IS value that may be multi-valued (EchoNumbers "1\\2") or empty."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return float(value[0]) if len(value) else 0.0
    return float(value)


def _pixel_layout(dataset) -> tuple[Optional[int], str, int]:
    """(offset of the first frame's uncompressed pixels or None, numpy dtype, bytes per frame)."""
    bits = int(dataset.get("BitsAllocated", 0))
    kind = "i" if int(dataset.get("PixelRepresentation", 0)) else "u"
    dtype = f"<{kind}{max(bits, 8) // 8}"
    frame_bytes = int(dataset.get("Rows", 0)) * int(dataset.get("Columns", 0)) * max(bits, 8) // 8
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", "")) if hasattr(dataset, "file_meta") else ""
    element = dataset.get_item(_PIXEL_DATA, keep_deferred=True)
    native = syntax in NATIVE_SYNTAXES and bits in (8, 16, 32) and int(dataset.get("SamplesPerPixel", 1)) == 1
    if not native or element is None or getattr(element, "value_tell", None) is None:
        return None, dtype, frame_bytes
    return int(element.value_tell), dtype, frame_bytes


def _single_frame(dataset, path: Path) -> list[Frame]:
    offset, dtype, _ = _pixel_layout(dataset)
    echo = (_first(dataset.get("EchoTime")), int(_first(dataset.get("EchoNumbers"))))
    return [Frame(path=path, index=0, cosines=tuple(float(v) for v in dataset.ImageOrientationPatient),
                  position=tuple(float(v) for v in dataset.ImagePositionPatient),
                  spacing=tuple(float(v) for v in dataset.get("PixelSpacing", (1.0, 1.0))),
                  shape=(int(dataset.Rows), int(dataset.Columns)),
                  slope=float(dataset.get("RescaleSlope", 1) or 1), intercept=float(dataset.get("RescaleIntercept", 0) or 0),
                  echo=echo, time_point=int(_first(dataset.get("TemporalPositionIdentifier"))), offset=offset, dtype=dtype)]


def _functional(item, shared, sequence: str, keyword: str):
    """``keyword`` of the first item of ``sequence`` in the frame's functional groups, else the shared ones, else None."""
    for groups in (item, shared):
        if groups is not None and sequence in groups and len(groups[sequence].value):
            value = groups[sequence].value[0].get(keyword)
            if value is not None:
                return value
    return None


def _multi_frame(dataset, path: Path) -> list[Frame]:
    per_frame = dataset.PerFrameFunctionalGroupsSequence
    shared = dataset.SharedFunctionalGroupsSequence[0] if len(dataset.get("SharedFunctionalGroupsSequence", [])) else None
    if _functional(per_frame[0] if len(per_frame) else None, shared, "PlanePositionSequence", "ImagePositionPatient") is None:
        return []  # a multi-frame object without patient geometry (secondary capture, ...)
    offset, dtype, frame_bytes = _pixel_layout(dataset)
    frames = []
    for index, item in enumerate(per_frame):
        position = _functional(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        cosines = _functional(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _functional(item, shared, "PixelMeasuresSequence", "PixelSpacing")
        if position is None or cosines is None or spacing is None:
            missing = "position" if position is None else "orientation" if cosines is None else "pixel spacing"
            raise DicomError(f"Frame {index + 1} of the multi-frame DICOM file {path} has no plane {missing}; "
                             "export the series again.")
        slope = _functional(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        unassigned = "UnassignedPerFrameConvertedAttributesSequence"  # where legacy conversion keeps them
        echo_time = (_functional(item, shared, "MREchoSequence", "EffectiveEchoTime")
                     or _functional(item, None, unassigned, "EchoTime"))
        echo_number = _functional(item, None, unassigned, "EchoNumbers")
        time_point = (_functional(item, shared, "FrameContentSequence", "TemporalPositionIndex")
                      or _functional(item, None, unassigned, "TemporalPositionIdentifier"))
        frames.append(Frame(path=path, index=index, cosines=tuple(float(v) for v in cosines),
                            position=tuple(float(v) for v in position), spacing=tuple(float(v) for v in spacing),
                            shape=(int(dataset.Rows), int(dataset.Columns)),
                            slope=float(slope if slope not in (None, "") else 1), intercept=float(intercept or 0),
                            echo=(_first(echo_time), int(_first(echo_number))), time_point=int(_first(time_point)),
                            offset=None if offset is None else offset + index * frame_bytes, dtype=dtype))
    return frames


def frames_of(dataset, path: Path) -> list[Frame]:
    """The slices of one parsed file; empty when it has no patient geometry (SR, RT, secondary capture ...)."""
    if "PerFrameFunctionalGroupsSequence" in dataset:
        return _multi_frame(dataset, path)
    if "ImageOrientationPatient" in dataset and "ImagePositionPatient" in dataset:
        return _single_frame(dataset, path)
    return []


def parse(path: Path, label: str = ""):
    """The dataset of ``path`` with its pixels left on disk; DicomError naming the file when it cannot be parsed."""
    pydicom = pydicom_module()
    try:
        return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except Exception as err:  # pydicom raises InvalidDicomError, EOFError, ... for broken files
        of = f" of {label}" if label else ""
        raise DicomError(f"DICOM file {path}{of} cannot be read ({type(err).__name__}: {err}); it may be truncated.") from None


def _decoded(path: Path, label: str) -> np.ndarray:
    """All frames of ``path`` decoded by pydicom, (frames, rows, columns)."""
    dataset = parse(path, label)
    try:
        pixels = dataset.pixel_array
    except Exception as err:  # pydicom raises RuntimeError/NotImplementedError for missing decoders
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(":. ")
        raise DicomError(f"The pixels of {label} cannot be decoded ({name}: {first}); if no decoder is installed "
                         "for it, install one such as pylibjpeg with pylibjpeg-libjpeg and pylibjpeg-openjpeg, or gdcm, "
                         "else the files are damaged.") from None
    return pixels.reshape(-1, *pixels.shape[-2:]) if int(dataset.get("NumberOfFrames", 1) or 1) > 1 else pixels[None]


def _read_into(target: np.ndarray, frame: Frame, label: str) -> None:
    """The uncompressed pixels of ``frame`` read from its file into ``target`` (of the frame's dtype and shape)."""
    try:
        with open(frame.path, "rb") as handle:
            handle.seek(frame.offset)
            got = handle.readinto(memoryview(target).cast("B"))
    except OSError as err:
        raise DicomError(f"DICOM file {frame.path} of {label} cannot be read ({err}).") from None
    if got != target.nbytes:
        raise DicomError(f"DICOM file {frame.path} of {label} ends inside its pixels; it is truncated: copy it again.")


def read_pixels(frames: Sequence[Frame], label: str) -> np.ndarray:
    """The pixels of ``frames`` rescaled, as float32 (columns, rows, frames); DicomError naming ``label``."""
    rows, columns = frames[0].shape
    same = all(f.offset is not None and f.dtype == frames[0].dtype for f in frames)
    stored = np.empty((len(frames), rows, columns), frames[0].dtype if same else np.float32)
    decoded: dict[Path, np.ndarray] = {}
    for k, frame in enumerate(frames):
        if frame.offset is None:
            if frame.path not in decoded:
                decoded[frame.path] = _decoded(frame.path, label)
            stored[k] = decoded[frame.path][frame.index]
        elif same:
            _read_into(stored[k], frame, label)
        else:
            buffer = np.empty((rows, columns), frame.dtype)
            _read_into(buffer, frame, label)
            stored[k] = buffer
    volume = np.empty((columns, rows, len(frames)), np.float32)
    volume[...] = stored.transpose(2, 1, 0)  # stored values, cast and transposed in one pass
    slopes = np.array([f.slope for f in frames], np.float32)
    intercepts = np.array([f.intercept for f in frames], np.float32)
    if np.any(slopes != 1):
        volume *= slopes
    if np.any(intercepts != 0):
        volume += intercepts
    return volume
