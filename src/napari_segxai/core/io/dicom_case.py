"""A DICOM study as a case: series mapped to modalities, put on one grid, named by a pseudonym.

**Series to modalities.** A series' SeriesDescription and ProtocolName are split into tokens (at
anything not a letter, digit or ``+``); each token and each pair of neighbouring tokens joined is
looked up in :data:`naming.MODALITY_ALIASES` (``flair``, ``t2``, ``t1``, ``mprage``, ``t1gd``,
``t1ce``, ``t1c``, ``post`` ...). The rules, in order:

| the series says | modality |
|---|---|
| FLAIR (``flair``, ``t2f``, ``t2flair``, ...) | flair |
| a contrast-enhanced T1 name (``t1ce``, ``t1gd``, ``t1c``, ``t1post``, ...), or a T1 name with a contrast agent (ContrastBolusAgent set, or a token ``post``, ``gd``, ``gad``, ``contrast``, ``km``, ``c+``) | t1ce |
| T1 (``t1``, ``t1w``, ``mprage``, ...) | t1 |
| T2 (``t2``, ``t2w``) | t2 |
| anything else (DWI, ADC, SWI, ...) | left out, with a note |

Two series mapped to the same modality are refused with the candidates listed; ``series=``
(``--series t1ce=7,flair=5`` on the command line: series number or SeriesInstanceUID) chooses.

**One grid.** The series are resampled (trilinear, in world coordinates, zero outside) onto the
grid of the reference series: ``reference``, else the model's first modality the study has, else the
first of t1, t1ce, t2, flair present. There is
no registration: series are assumed to be aligned by the scanner's patient coordinates, and
:mod:`.alignment` reports the series whose head masks disagree with the reference's.

**Pseudonym.** The case is named ``study-`` + the first 10 hex digits of the SHA-256 of the
StudyInstanceUID, never by patient name or ID.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .. import naming
from .dicom import DicomError, DicomSeries, Study, read_series, read_study

_CONTRAST_TOKENS = {"post", "gd", "gad", "gado", "contrast", "km", "c+", "ce"}


def series_modality(series: DicomSeries) -> Optional[str]:
    """The modality a series is by the rules above, or None."""
    text = f"{series.description} {series.protocol}".lower()
    tokens = [t for t in re.split(r"[^a-z0-9+]+", text) if t]
    keys = tokens + [a + b for a, b in zip(tokens, tokens[1:])]
    found = {naming.MODALITY_ALIASES[k] for k in keys if k in naming.MODALITY_ALIASES}
    contrast = bool(str(series.attributes.get("ContrastBolusAgent", "")).strip()) or bool(_CONTRAST_TOKENS & set(tokens))
    if "flair" in found:
        return "flair"
    if "t1ce" in found or ("t1" in found and contrast):
        return "t1ce"
    if "t1" in found:
        return "t1"
    if "t2" in found:
        return "t2"
    return None


def pseudonym(study_uid: str) -> str:
    """A stable name for a study that carries no patient data."""
    return "study-" + hashlib.sha256(study_uid.encode()).hexdigest()[:10]


def _chosen(study, series: Mapping[str, str]) -> dict[str, DicomSeries]:
    chosen = {}
    for modality, key in series.items():
        match = [s for s in study.series if str(key) in (s.key, s.uid)]
        match = match or [s for s in study.series if str(s.number) == str(key)]
        if not match:
            listed = "; ".join(s.label for s in study.series)
            raise DicomError(f"No series {key} for {modality} in this study; its series are: {listed}.")
        chosen[naming.normalize_modality(modality)] = match[0]
    return chosen


def map_series(study, series: Optional[Mapping[str, str]] = None) -> tuple[dict[str, DicomSeries], list[str]]:
    """{modality: series} of ``study`` (``series`` chooses by key, number or UID) and notes on what was left out.

    A key is the series number, with ``.echo`` (``.time point``) where one series holds several stacks.
    """
    notes = []
    if series:
        return _chosen(study, series), notes
    candidates: dict[str, list[DicomSeries]] = {}
    for item in study.series:
        modality = series_modality(item)
        if modality is None:
            notes.append(f"{item.label} matches no modality and is left out.")
        else:
            candidates.setdefault(modality, []).append(item)
    ambiguous = {m: c for m, c in candidates.items() if len(c) > 1}
    if ambiguous:
        modality, items = next(iter(ambiguous.items()))
        example = ",".join(f"{m}={c[0].key}" for m, c in candidates.items())
        raise DicomError(f"Several series could be {modality}: {'; '.join(s.label for s in items)}; choose with "
                         f"--series (e.g. --series {example}).")
    if not candidates:
        raise DicomError("No series of this study matches a modality (t1, t1ce, t2, flair); its series are: "
                         f"{'; '.join(s.label for s in study.series)}; choose with --series t1=N,...")
    return {m: c[0] for m, c in candidates.items()}, notes


#: The patient and study attributes a report shows when the user asks for identifiers (nothing shows them by default).
IDENTIFIERS = {"PatientName": "patient", "PatientID": "patient ID", "PatientBirthDate": "birth date",
               "AccessionNumber": "accession number", "StudyDate": "study date", "StudyDescription": "study"}


def patient_identifiers(files) -> dict[str, str]:
    """The patient's and study's identifiers (:data:`IDENTIFIERS`) in the first of ``files``; {} without DICOM files."""
    if not files:
        return {}
    import pydicom

    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    return {label: str(header.get(keyword, "")) for keyword, label in IDENTIFIERS.items() if header.get(keyword)}


def study_name(folder: Path) -> Optional[str]:
    """The pseudonym of the study in ``folder`` (from its first DICOM file), or None when it holds none."""
    import pydicom

    from .dicom import is_dicom_file

    for item in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if is_dicom_file(item):
            header = pydicom.dcmread(item, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            return pseudonym(str(header.get("StudyInstanceUID", item)))
    return None


def resample_to(volume: np.ndarray, affine: np.ndarray, reference_affine: np.ndarray,
                shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """``volume`` (on ``affine``) resampled (trilinear; ``order`` 0: nearest) onto (``reference_affine``, ``shape``), 0 outside."""
    from scipy import ndimage

    transform = np.linalg.inv(affine) @ reference_affine  # reference voxel -> volume voxel
    return ndimage.affine_transform(volume, transform[:3, :3], offset=transform[:3, 3], output_shape=shape,
                                    order=order, mode="constant", cval=0.0)


def study_case(path: "str | Path | Study", *, series: Optional[Mapping[str, str]] = None,
               reference: Optional[str] = None, prefer: Sequence[str] = ()):
    """The Case of the DICOM study or series at ``path`` (or an already read Study) and how each series agrees.

    ``reference`` is the modality whose series gives the grid (default: the first of ``prefer``, the
    model's modalities, that the study has, else the first of t1, t1ce, t2, flair present). The case's
    notes say which series were left out and which may be misregistered.
    """
    from ..case import Case
    from .alignment import STRIDE, agreement, head_mask

    study = path if isinstance(path, Study) else read_study(path)
    mapping, notes = map_series(study, series)
    modalities = sorted(mapping, key=naming.modality_sort_key)
    preferred = [m for m in map(naming.normalize_modality, prefer) if m in mapping]
    first = naming.normalize_modality(reference) if reference else (preferred or modalities)[0]
    if first not in mapping:
        raise DicomError(f"The reference {reference} is none of this study's modalities ({', '.join(modalities)}).")
    base, base_affine = read_series(mapping[first])
    base_head = head_mask(base[(slice(None, None, STRIDE),) * base.ndim])
    channels, agreements = [], []
    for modality in modalities:
        if modality == first:
            channels.append(base)
            continue
        volume, affine = read_series(mapping[modality])
        covered = None
        if not (volume.shape == base.shape and np.allclose(affine, base_affine, atol=1e-4)):
            # its field of view on the compared voxels (every STRIDE-th of the reference grid)
            covered = resample_to(np.ones(volume.shape, np.uint8), affine, base_affine @ np.diag([STRIDE] * 3 + [1]),
                                  base_head.shape, order=0) > 0
            volume = resample_to(volume, affine, base_affine, base.shape).astype(np.float32)
        channels.append(volume)
        agreements.append(agreement(volume, base_head, base_affine, modality=modality, reference=first, covered=covered))
    notes = [*study.notes, *notes, *(a.sentence() for a in agreements if a.misregistered)]
    files = tuple(f for m in modalities for f in mapping[m].files)
    case = Case(np.stack(channels), tuple(modalities), base_affine, source_paths=files,
                name=pseudonym(mapping[first].study_uid), reference_files=mapping[first].files, notes=tuple(notes))
    return case, agreements


def case_from_study(path: str | Path, *, series: Optional[Mapping[str, str]] = None, reference: Optional[str] = None,
                    prefer: Sequence[str] = ()):
    """The :class:`~napari_segxai.core.case.Case` of the DICOM study or series at ``path`` (see :func:`study_case`)."""
    return study_case(path, series=series, reference=reference, prefer=prefer)[0]
