"""Results back to DICOM: labels as a DICOM SEG, a relevance map as a DICOM Parametric Map, both with highdicom.

Both reference the series the case was read from (its *reference series*), frame by frame, so OHIF,
3D Slicer or a PACS draw them over the original images. Labels and maps live on that series' grid:
(columns, rows, slices) with the case's voxel-to-RAS affine, as :func:`.dicom.read_series` gives it.

**Which file is which slice.** Every source file (or frame of one multi-frame file) is put on the
grid from its own ImagePositionPatient through the inverse affine, never by file order; a file whose
first pixel or far corners lie more than :data:`GRID_TOLERANCE_MM` off the grid (another series, a
resampled case) is refused with a sentence, as is a grid slice that no file covers.

**Segments.** One per class whose label value is not 0, numbered 1, 2, ... in class order; the
SegmentLabel is the class name, the colour the class colour, SegmentAlgorithmType AUTOMATIC with the
model's name and version. Classes without a voxel keep their segment (with no frames), so a SEG of
one model always lists the same segments. Codes (SNOMED CT), chosen from the class name by
:func:`segment_codes`: edema/oedema -> Morphologically abnormal structure / Edema; necrosis ->
.../Necrosis; tumour-like names (tumour, tumor, neoplasm, enhancing, cancer, carcinoma, glioma,
metastasis) -> .../Neoplasm; lesion -> .../Lesion; anything else -> Tissue / Tissue.

**Source attributes.** highdicom copies the patient and study attributes from the source, as a SEG
going back to the PACS must; Type 2 attributes missing from the source (anonymised files often lack
PatientSex or StudyTime) are added empty to the in-memory copies, never to the files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .files import atomic_path

#: How far (mm) a source file's pixels may lie from the grid's voxel centres.
GRID_TOLERANCE_MM = 0.05
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
_CODE_RULES = (  # (name fragments, SCT type attribute name), first match wins
    (("edema", "oedema"), "Edema"),
    (("necro",), "Necrosis"),
    (("tumo", "neoplas", "enhanc", "cancer", "carcinom", "glioma", "metasta"), "Neoplasm"),
    (("lesion",), "Lesion"),
)


def _highdicom():
    try:
        import highdicom
    except ImportError as err:
        raise ValueError("Writing DICOM SEG needs highdicom, which is not installed; install it with: "
                         "pip install highdicom.") from err
    return highdicom


def segment_codes(name: str):
    """(SegmentedPropertyCategory, SegmentedPropertyType) SNOMED CT codes for a class name (see the module doc)."""
    from pydicom.sr.codedict import codes

    lowered = name.lower()
    for fragments, kind in _CODE_RULES:
        if any(f in lowered for f in fragments):
            return codes.SCT.MorphologicallyAbnormalStructure, getattr(codes.SCT, kind)
    return codes.SCT.Tissue, codes.SCT.Tissue


def _rgb255(color: Any, name: str) -> tuple[int, int, int]:
    """A colour given as '#rrggbb' or three numbers 0-1 as three integers 0-255."""
    if isinstance(color, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", color.strip()):
        text = color.strip().lstrip("#")
        return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    try:
        values = [float(v) for v in color]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (3, 4) or not all(0.0 <= v <= 1.0 for v in values[:3]):
        raise ValueError(f"The colour {color!r} of class {name!r} is neither '#rrggbb' nor three numbers 0-1.")
    return tuple(int(round(v * 255)) for v in values[:3])  # type: ignore[return-value]


def class_entries(classes: Any) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(label value, name, rgb 0-255) of every class but background (value 0).

    ``classes``: objects with ``label``, ``name`` and ``color`` (a model card's ClassInfo), tuples
    (value, name, colour), or a mapping {value: name} (a LabelScheme's classes; colours grey).
    """
    if isinstance(classes, Mapping):
        classes = [(value, name, "#808080") for value, name in classes.items()]
    entries = []
    for item in classes:
        if hasattr(item, "label") and hasattr(item, "name"):
            value, name, color = item.label, item.name, getattr(item, "color", "#808080")
        else:
            try:
                value, name, color = item
            except (TypeError, ValueError):
                raise ValueError(f"The class {item!r} is not (label value, name, colour).") from None
        if int(value) != 0:
            entries.append((int(value), str(name), _rgb255(color, str(name))))
    values = [e[0] for e in entries]
    if len(set(values)) != len(values):
        raise ValueError(f"The classes repeat a label value ({values}); give each class its own value.")
    return entries


def _check_output(out_path: Path, sources: Iterable[Path], protected: Iterable[str | Path], overwrite: bool) -> None:
    """Refuse to write onto an input (a source file or a ``protected`` path) or, unless told to, an existing file.

    The same rule as :func:`.nifti.save_nifti`'s ``protected`` check (which is inline there, not a helper).
    """
    target = out_path.expanduser().resolve()
    for p in (*sources, *protected):
        if Path(p).expanduser().resolve() == target:
            raise ValueError(f"Refusing to overwrite {out_path}: the case was loaded from it; choose another output path.")
    if target.exists() and not overwrite:
        raise ValueError(f"{out_path} exists; napari-segxai does not overwrite it unless asked to: choose a new name.")


def _read_sources(reference_files: Sequence[str | Path]) -> list:
    """The headers of the reference files (pixels not read), Type 2 attributes filled in empty where missing."""
    import pydicom

    if not reference_files:
        raise ValueError("No reference files were given; pass the DICOM files of the series the case was read from.")
    datasets = []
    for path in reference_files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # pydicom raises InvalidDicomError, OSError, EOFError, ...
            raise ValueError(f"The reference file {path} cannot be read as DICOM ({type(err).__name__}: {err}).") from None
        for keyword in _TYPE2:
            if keyword not in dataset:
                setattr(dataset, keyword, None)
        datasets.append(dataset)
    uids = {str(d.get("SeriesInstanceUID", "")) for d in datasets}
    if len(uids) > 1:
        raise ValueError(f"The reference files come from {len(uids)} series; give the files of the one series the case "
                         "was read from.")
    return datasets


def _frame_geometry(dataset) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]]:
    """(position, row cosines, column cosines, (row spacing, column spacing)) of each frame of a dataset, LPS."""
    def plane(groups, name, keyword):
        item = groups.get(name) if groups is not None else None
        return getattr(item[0], keyword) if item else None

    if "PerFrameFunctionalGroupsSequence" in dataset:
        shared = dataset.get("SharedFunctionalGroupsSequence", [None])[0]
        frames = []
        for item in dataset.PerFrameFunctionalGroupsSequence:
            orientation = plane(item, "PlaneOrientationSequence", "ImageOrientationPatient") or \
                plane(shared, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = plane(item, "PixelMeasuresSequence", "PixelSpacing") or \
                plane(shared, "PixelMeasuresSequence", "PixelSpacing")
            position = plane(item, "PlanePositionSequence", "ImagePositionPatient")
            frames.append((position, orientation, spacing))
    else:
        frames = [(dataset.get("ImagePositionPatient"), dataset.get("ImageOrientationPatient"), dataset.get("PixelSpacing"))]
    geometry = []
    for position, orientation, spacing in frames:
        if position is None or orientation is None or spacing is None:
            raise ValueError(f"The reference file {getattr(dataset, 'filename', '')} has no image position, orientation "
                             "or pixel spacing; give the image files of the reference series.")
        cosines = np.array([float(v) for v in orientation])
        geometry.append((np.array([float(v) for v in position]), cosines[:3], cosines[3:],
                         (float(spacing[0]), float(spacing[1]))))
    return geometry


def _slice_indices(datasets: list, affine: np.ndarray, shape: tuple[int, int, int]) -> list[int]:
    """The grid slice of every source frame (files in order, frames in order); ValueError when one lies off the grid."""
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    inverse = np.linalg.inv(lps)
    columns, rows, n_slices = shape
    indices = []
    for dataset in datasets:
        name = Path(str(getattr(dataset, "filename", "") or "a reference file")).name
        if (int(dataset.Columns), int(dataset.Rows)) != (columns, rows):
            raise ValueError(f"{name} has {dataset.Columns} x {dataset.Rows} pixels but the grid has {columns} x {rows}; "
                             "give the files of the reference series the case was read from.")
        for position, row, column, (row_spacing, column_spacing) in _frame_geometry(dataset):
            k = int(round(float((inverse @ np.append(position, 1.0))[2])))
            corners = [(0, 0), (columns - 1, 0), (0, rows - 1), (columns - 1, rows - 1)]
            offsets = [np.linalg.norm(position + c * column_spacing * row + r * row_spacing * column
                                      - (lps @ np.array([c, r, k, 1.0]))[:3]) for c, r in corners]
            if not 0 <= k < n_slices or max(offsets) > GRID_TOLERANCE_MM:
                raise ValueError(f"{name} does not lie on the grid of the result ({max(offsets):.3g} mm off its nearest "
                                 "slice); give the files of the reference series the case was read from.")
            indices.append(k)
    missing = sorted(set(range(n_slices)) - set(indices))
    if missing or len(indices) != n_slices:
        what = f"no file for slice {missing[0]}" if missing else "two files for one slice"
        raise ValueError(f"The reference files do not cover the grid one slice each ({what}); give all files of the "
                         "reference series and no others.")
    return indices


def _frames(volume: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """The source frames (frames, rows, columns) of a (columns, rows, slices) volume."""
    return np.ascontiguousarray(volume[:, :, list(indices)].transpose(2, 1, 0))


def _series_number(datasets: list, offset: int) -> int:
    number = datasets[0].get("SeriesNumber")
    return offset + (int(number) if number not in (None, "") else 0)


def _software_version() -> str:
    from ... import __version__

    return __version__


def _save(dataset, out_path: Path) -> Path:
    """Write a highdicom instance atomically."""
    with atomic_path(out_path, suffix=".tmp.dcm") as temporary:
        dataset.save_as(temporary, enforce_file_format=True)
    return out_path


def _build(factory, what: str, out_path: Path):
    """Call a highdicom constructor; its validation errors become one sentence."""
    try:
        return factory()
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(". ")
        raise ValueError(f"The {what} {out_path.name} cannot be built from these inputs: {first}.") from None


def write_seg(labels: np.ndarray, classes: Any, reference_files: Sequence[str | Path], affine: np.ndarray,
              out_path: str | Path, *, series_description: str, algorithm_name: str, algorithm_version: str,
              protected: Iterable[str | Path] = (), overwrite: bool = False, series_number: int | None = None) -> Path:
    """Write ``labels`` (columns, rows, slices) on the grid ``affine`` as a binary DICOM SEG referencing the source.

    ``series_number`` defaults to 1000 + the source's SeriesNumber.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    out_path = Path(out_path)
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "biu":
        raise ValueError(f"The labels must be a 3D integer array (columns, rows, slices), not {labels.dtype} {labels.shape}.")
    if not algorithm_name.strip():
        raise ValueError("The algorithm name is empty; give the model's name, which the SEG must record.")
    _check_output(out_path, reference_files, protected, overwrite)
    entries = class_entries(classes)
    present = {int(v) for v in np.unique(labels)} - {0}
    unknown = sorted(present - {e[0] for e in entries})
    if unknown:
        raise ValueError(f"The labels hold values {unknown} that no class names; give a class for every label value.")
    if not entries:
        raise ValueError("The classes name no segment (only background); give at least one class with a value other than 0.")
    datasets = _read_sources(reference_files)
    indices = _slice_indices(datasets, affine, labels.shape)
    lookup = np.zeros(max(e[0] for e in entries) + 1, np.uint8)
    for number, (value, _, _) in enumerate(entries, start=1):
        lookup[value] = number
    segments = lookup[np.clip(labels, 0, len(lookup) - 1)]
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, family=codes.DCM.ArtificialIntelligence,
                                                    version=algorithm_version)
    descriptions = []
    for number, (value, name, rgb) in enumerate(entries, start=1):
        category, kind = segment_codes(name)
        descriptions.append(_build(lambda: hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*rgb)),
            f"segment {name!r} of the DICOM SEG", out_path))
    seg = _build(lambda: hd.seg.Segmentation(
        source_images=datasets, pixel_array=_frames(segments, indices),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=series_number or _series_number(datasets, 1000),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="napari-segxai",
        manufacturer_model_name=algorithm_name, software_versions=_software_version(), device_serial_number="none",
        series_description=series_description, content_label="SEGMENTATION",
        content_description=f"{algorithm_name} {algorithm_version}"[:64]), "DICOM SEG", out_path)
    return _save(seg, out_path)


def _content_label(text: str) -> str:
    """A ContentLabel (code string: upper-case letters, digits, space, underscore; 16 characters)."""
    return re.sub(r"[^A-Z0-9 _]+", "_", text.upper()).strip("_ ")[:16] or "RELEVANCE"


def write_parametric_map(values: np.ndarray, reference_files: Sequence[str | Path], affine: np.ndarray,
                         out_path: str | Path, *, method: str, target: str, series_description: str | None = None,
                         content_label: str = "RELEVANCE", algorithm_name: str = "napari-segxai",
                         algorithm_version: str | None = None, protected: Iterable[str | Path] = (),
                         overwrite: bool = False, series_number: int | None = None) -> Path:
    """Write a float map (columns, rows, slices) on the grid ``affine`` as a DICOM Parametric Map referencing the source.

    Values are stored as 32-bit floats with an identity real world value mapping (no units) whose
    explanation, like the content and (by default) series description, reads "<method>, <target>",
    e.g. "Integrated Gradients, class tumour". ``series_number`` defaults to 2000 + the source's.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    out_path = Path(out_path)
    values = np.asarray(values)
    if values.ndim != 3 or values.dtype.kind not in "biuf":
        raise ValueError(f"The map must be a 3D array of numbers (columns, rows, slices), not {values.dtype} {values.shape}.")
    values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError("The map holds NaN or infinite values; replace them (for example with 0) before writing DICOM.")
    _check_output(out_path, reference_files, protected, overwrite)
    datasets = _read_sources(reference_files)
    indices = _slice_indices(datasets, affine, values.shape)
    described = f"{method}, {target}"[:64]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    mapping = _build(lambda: hd.pm.RealWorldValueMapping(
        lut_label=_content_label(method)[:16], lut_explanation=described, unit=codes.UCUM.NoUnits,
        value_range=(low, high), slope=1.0, intercept=0.0), "Parametric Map", out_path)
    extent = max(abs(low), abs(high)) or 1.0
    window = hd.VOILUTTransformation(window_center=0.0 if low < 0 else extent / 2, window_width=2 * extent if low < 0 else extent)
    parametric_map = _build(lambda: hd.pm.ParametricMap(
        source_images=datasets, pixel_array=_frames(values, indices), series_instance_uid=hd.UID(),
        series_number=series_number or _series_number(datasets, 2000), sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="napari-segxai", manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version or _software_version(), device_serial_number="none",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[window], content_label=_content_label(content_label),
        content_description=described, series_description=(series_description or described)[:64]),
        "Parametric Map", out_path)
    return _save(parametric_map, out_path)


def _source_pixels(instance, reference_files, affine, what: str, **options) -> tuple[np.ndarray, list[int], tuple]:
    """The frames of a SEG or Parametric Map for every source frame, the slice of each, and the grid shape."""
    datasets = _read_sources(reference_files)
    shape = (int(datasets[0].Columns), int(datasets[0].Rows),
             sum(len(_frame_geometry(d)) for d in datasets))
    indices = _slice_indices(datasets, affine, shape)
    try:
        if len(datasets) == 1 and "PerFrameFunctionalGroupsSequence" in datasets[0]:
            pixels = instance.get_pixels_by_source_frame(
                source_sop_instance_uid=str(datasets[0].SOPInstanceUID), source_frame_numbers=range(1, shape[2] + 1),
                assert_missing_frames_are_empty=True, **options)
        else:
            pixels = instance.get_pixels_by_source_instance(
                source_sop_instance_uids=[str(d.SOPInstanceUID) for d in datasets],
                assert_missing_frames_are_empty=True, **options)
    except (ValueError, KeyError, IndexError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(". ")
        raise ValueError(f"The {what} does not refer to these reference files ({first}); give the series it was made "
                         "from.") from None
    return pixels, indices, shape


def _volume(pixels: np.ndarray, indices: Sequence[int], shape: tuple, dtype) -> np.ndarray:
    volume = np.zeros(shape, dtype)
    volume[:, :, list(indices)] = np.asarray(pixels).transpose(2, 1, 0)
    return volume


def read_seg(path: str | Path, reference_files: Sequence[str | Path], affine: np.ndarray, *,
             classes: Any = None) -> np.ndarray:
    """A DICOM SEG as labels (columns, rows, slices) on the reference series' grid.

    Values are the classes' label values, matched by segment label = class name (``classes``, as for
    :func:`write_seg`), else the segment numbers.
    """
    hd = _highdicom()
    try:
        seg = hd.seg.segread(path)
    except Exception as err:  # pydicom/highdicom raise many types for a file that is not a SEG
        raise ValueError(f"{path} cannot be read as a DICOM SEG ({type(err).__name__}: {err}).") from None
    pixels, indices, shape = _source_pixels(seg, reference_files, affine, f"DICOM SEG {Path(path).name}",
                                            combine_segments=True, dtype=np.uint16)
    labels = _volume(pixels, indices, shape, np.int16)
    if classes is None:
        return labels
    by_name = {name: value for value, name, _ in class_entries(classes)}
    lookup = np.zeros(int(labels.max(initial=0)) + 1, np.int16)
    for number in seg.get_segment_numbers():
        name = seg.get_segment_description(number).segment_label
        if name not in by_name:
            raise ValueError(f"Segment {number} of {path} is {name!r}, which none of the classes names.")
        if number < len(lookup):
            lookup[number] = by_name[name]
    return lookup[labels]


def read_parametric_map(path: str | Path, reference_files: Sequence[str | Path], affine: np.ndarray) -> np.ndarray:
    """A DICOM Parametric Map as float32 values (columns, rows, slices) on the reference series' grid."""
    hd = _highdicom()
    import pydicom

    try:
        parametric_map = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    except Exception as err:  # pydicom/highdicom raise many types for a file that is not a Parametric Map
        raise ValueError(f"{path} cannot be read as a DICOM Parametric Map ({type(err).__name__}: {err}).") from None
    pixels, indices, shape = _source_pixels(parametric_map, reference_files, affine,
                                            f"Parametric Map {Path(path).name}", dtype=np.float32)
    return _volume(pixels, indices, shape, np.float32)
