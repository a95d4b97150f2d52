"""A DICOM study as NIfTI files: every image series on its own grid, and the case on one grid.

``segxai convert STUDY --out DIR`` writes, under ``DIR/<pseudonym>/``:

- ``<pseudonym>_<modality>.nii.gz``: the case, each modality's series resampled onto the reference
  series' grid (a case folder every ``segxai`` command and the napari reader open);
- ``series/series-<key>.nii.gz``: each image series of the study as acquired, on its own grid
  (the voxel-to-world mapping dcm2niix gives);
- ``series.json``: per series its number, key, description, the modality it was mapped to (or none),
  shape, voxel size and file; and the head-mask agreement of each modality with the reference.

No file carries patient names, IDs or dates: the folder is named by the study's pseudonym.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from .dicom import read_series, read_study
from .dicom_case import map_series, study_case
from .files import write_text
from .nifti import save_nifti


def convert_study(path: str | Path, out: str | Path, *, series: Optional[Mapping[str, str]] = None,
                  reference: Optional[str] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> tuple[Path, list[str]]:
    """Write the study at ``path`` as NIfTI under ``out``; the case folder and what the user should know.

    Every series is read before anything is written, so a series that cannot be read leaves ``out``
    as it was.
    """
    study = read_study(path)
    case, agreements = study_case(study, series=series, reference=reference)
    mapping, _ = map_series(study, series)
    modality_of = {item.uid + str(item.orientation): modality for modality, item in mapping.items()}
    volumes = []
    for index, item in enumerate(study.series):
        volumes.append((item, *read_series(item)))
        if progress is not None:
            progress(index + 1, len(study.series) + 1)
    folder = Path(out) / case.name
    protected = tuple(case.source_paths)
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"{case.name}_{modality}.nii.gz", protected=protected)
    rows, used = [], set()
    for item, volume, affine in volumes:
        stem = f"series-{item.key}"
        name, count = stem, 1
        while name in used:
            count += 1
            name = f"{stem}_{count}"
        used.add(name)
        written = save_nifti(volume, affine, folder / "series" / f"{name}.nii.gz", protected=protected)
        rows.append({"number": item.number, "key": item.key, "description": item.description or item.protocol,
                     "modality": modality_of.get(item.uid + str(item.orientation)), "shape": list(volume.shape),
                     "voxel_mm": [round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0)],
                     "file": str(written.relative_to(folder))})
    summary = {"case": case.name, "modalities": list(case.modalities), "reference_grid": list(case.shape),
               "series": rows, "agreement": [{"modality": a.modality, "reference": a.reference,
                                              "dice": round(a.dice, 4), "shift_mm": round(a.shift_mm, 2),
                                              "overlap": round(a.overlap, 4),
                                              "misregistered": a.misregistered} for a in agreements]}
    write_text(folder / "series.json", json.dumps(summary, indent=2) + "\n")
    if progress is not None:
        progress(len(study.series) + 1, len(study.series) + 1)
    return folder, [*case.notes, *(a.sentence() for a in agreements if not a.misregistered)]
