"""A segmentation as files: ``<case>_seg.nii.gz`` (label values) and ``<case>_prob.nii.gz`` (class probabilities).

``segxai segment`` writes both and ``segxai demo`` the labels, through :func:`write_segmentation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .nifti import save_nifti


def output_paths(case_name: str, out: str | Path) -> tuple[Path, Path]:
    """Where the labels and the probabilities of ``case_name`` are written in ``out``."""
    out = Path(out)
    return out / f"{case_name}_seg.nii.gz", out / f"{case_name}_prob.nii.gz"


def write_segmentation(result, case_name: str, out: str | Path, *, protected: Sequence[str | Path] = (),
                       probabilities: bool = True) -> tuple[Path, ...]:
    """Write a Segmentation's labels (and, unless told not to, its probabilities, channels last) into ``out``.

    ``protected`` files (the case's inputs) are never overwritten: a ValueError says so.
    """
    labels_path, prob_path = output_paths(case_name, out)
    written = [save_nifti(result.labels, result.affine, labels_path, protected=protected)]
    if probabilities:
        written.append(save_nifti(np.moveaxis(result.probabilities, 0, -1), result.affine, prob_path,
                                  protected=protected))
    return tuple(written)
