"""Find the cases of a cohort folder: every sub-folder holding NIfTI files or a DICOM study, and every NIfTI file.

A DICOM study is named by its pseudonym (:func:`..io.dicom_case.pseudonym`), never by its folder's
name, which a PACS export often makes of the patient's name or ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import naming
from ..io.dicom import is_dicom_input
from ..io.dicom_case import study_name


@dataclass(frozen=True)
class CohortCase:
    """One case of a cohort: a stable identifier (used for its output folder) and where it lies."""

    case_id: str
    path: Path
    dicom: bool = False

    @property
    def source(self) -> str:
        """Where the case lies, as outputs show it: a DICOM study's folder is left out (it may name the patient)."""
        return f"DICOM study {self.case_id}" if self.dicom else str(self.path)


def case_id(text: str) -> str:
    """A case name usable as a folder name: letters, digits, ``.``, ``_`` and ``-`` only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def _holds_nifti(folder: Path) -> bool:
    """True when ``folder`` holds at least one visible NIfTI file."""
    return any(p.is_file() and naming.is_nifti(p) and not p.name.startswith(".") for p in folder.iterdir())


def find_cases(cases_dir: str | Path, *, exclude: tuple[str | Path, ...] = ()) -> list[CohortCase]:
    """The cases of ``cases_dir`` sorted by name: sub-folders with NIfTI files, and NIfTI files (hidden ones skipped)."""
    root = Path(cases_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"The cases folder {root} does not exist or is not a folder; give a folder of case folders or NIfTI files.")
    skipped = {Path(p).expanduser().resolve() for p in exclude}
    found: list[tuple[str, Path]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.resolve() in skipped:
            continue
        if entry.is_dir() and _holds_nifti(entry):
            found.append((entry.name, entry))
        elif entry.is_dir() and is_dicom_input(entry):
            found.append((study_name(entry) or "study", entry))
        elif entry.is_file() and naming.is_nifti(entry):
            found.append((naming.file_stem(entry), entry))
    if not found:
        raise ValueError(f"{root} holds no case: put one folder per case (or one NIfTI file per case) in it.")
    cases: list[CohortCase] = []
    taken: set[str] = set()
    for name, path in found:
        ident = case_id(name)
        if ident.lower() in taken:  # e.g. a folder "a" and a file "a.nii.gz", or names differing only in case
            ident = case_id(path.name)
            n = 2
            while ident.lower() in taken:
                ident, n = f"{case_id(path.name)}-{n}", n + 1
        taken.add(ident.lower())
        cases.append(CohortCase(ident, path, dicom=path.is_dir() and not _holds_nifti(path)))
    return cases
