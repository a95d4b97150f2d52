"""A DICOM case's results as DICOM beside its study: the segmentation as SEG, relevance as Parametric Maps.

Both reference the case's reference series (the series whose grid the case is on), so a PACS or a
DICOM viewer (OHIF, 3D Slicer) shows them over the original images. ``segxai segment --format
dicom`` and ``segxai explain --format dicom`` write them; so does the napari writer (DICOM SEG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .relevance import safe_name


def require_dicom_case(case) -> None:
    """A ValueError unless ``case`` came from a DICOM study (a SEG must reference the source images)."""
    if not case.reference_files:
        raise ValueError(f"Case {case.name} was not opened from a DICOM study, so there are no source images for a "
                         "DICOM SEG or Parametric Map to reference; open the DICOM study, or write NIfTI.")


def seg_path(case_name: str, out: str | Path) -> Path:
    """Where a case's DICOM SEG goes in ``out``."""
    return Path(out) / f"{case_name}_seg.dcm"


def write_segmentation_dicom(result, case, card_name: str, out: str | Path) -> Path:
    """The segmentation ``result`` of ``case`` as ``<case>_seg.dcm`` (DICOM SEG, one segment per class)."""
    from .dicom_write import write_seg
    from ... import __version__

    require_dicom_case(case)
    classes = [c for c in result.classes if c.label != 0]
    return write_seg(result.labels, classes, case.reference_files, case.affine, seg_path(case.name, out),
                     series_description=f"{card_name} segmentation"[:64], algorithm_name=card_name,
                     algorithm_version=__version__, protected=case.source_paths, overwrite=True)


def relevance_dicom_paths(case_name: str, method: str, class_names: Sequence[str], channels: Sequence[str],
                          out: str | Path) -> dict[tuple[str, str], Path]:
    """Where each (class, channel) Parametric Map goes: ``<case>_<method>_<class>_<channel>.dcm``."""
    stem = f"{case_name}_{safe_name(method)}"
    return {(name, channel): Path(out) / f"{stem}_{safe_name(name)}_{safe_name(channel)}.dcm"
            for name in class_names for channel in channels}


def write_relevance_dicom(result, case, out: str | Path) -> dict[tuple[str, str], Path]:
    """Each class's relevance, one Parametric Map per input channel, described by method, class and channel."""
    from .dicom_write import write_parametric_map

    require_dicom_case(case)
    paths = relevance_dicom_paths(case.name, result.method, result.class_names, result.channel_names, out)
    written = {}
    for k, name in enumerate(result.class_names):
        for c, channel in enumerate(result.channel_names):
            written[(name, channel)] = write_parametric_map(
                result.relevance[k, c], case.reference_files, case.affine, paths[(name, channel)],
                method=result.method, target=f"class {name}, channel {channel}", protected=case.source_paths,
                overwrite=True)
    return written
