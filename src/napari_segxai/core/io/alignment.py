"""Do the series of a study show the same head in the same place? Head masks compared after resampling.

napari-segxai puts the series of a DICOM study on one grid by the scanner's patient coordinates and
does not register them. A patient who moved between series leaves the series misaligned, and the
model then reads a FLAIR voxel that belongs somewhere else. This check makes that visible: each
series' head mask (Otsu's threshold of its intensities) is compared with the reference series' mask
inside the field of view both cover, by Dice overlap and by the distance between the masks' centres.
A series is reported when the Dice is below :data:`MIN_DICE` or the centres are more than
:data:`MAX_SHIFT_MM` apart, and when it covers less than :data:`MIN_OVERLAP` of the reference
series' field of view (the case is zero outside it, and too little is left to compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Head masks overlapping less than this (Dice) are reported as possibly misregistered.
MIN_DICE = 0.85
#: Head-mask centres further apart than this (mm) are reported as possibly misregistered.
MAX_SHIFT_MM = 5.0
#: A series covering less than this share of the reference grid is reported (and not compared).
MIN_OVERLAP = 0.25


@dataclass(frozen=True)
class Agreement:
    """How one series' head mask agrees with the reference series' mask."""

    modality: str
    reference: str
    dice: float
    shift_mm: float
    overlap: float = 1.0  # the share of the reference grid the series covers

    @property
    def misregistered(self) -> bool:
        """Whether the series covers too little of the reference grid, or the masks disagree beyond the thresholds."""
        return self.overlap < MIN_OVERLAP or self.dice < MIN_DICE or self.shift_mm > MAX_SHIFT_MM

    def sentence(self) -> str:
        """The agreement in words, with the thresholds."""
        if self.overlap < MIN_OVERLAP:
            return (f"{self.modality} covers only {self.overlap:.0%} of the {self.reference} series' field of view "
                    f"(the case's {self.modality} is zero elsewhere); check that the series belong together.")
        verdict = "may be misregistered (no registration is done)" if self.misregistered else "agree"
        return (f"{self.modality} vs {self.reference}: head masks overlap with Dice {self.dice:.2f}, centres "
                f"{self.shift_mm:.1f} mm apart: {verdict} (thresholds: Dice {MIN_DICE:.2f}, {MAX_SHIFT_MM:.0f} mm).")


def head_mask(volume: np.ndarray) -> np.ndarray:
    """The voxels brighter than Otsu's threshold of ``volume``'s intensities (the head against the air)."""
    values = volume[np.isfinite(volume)]
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return np.zeros(volume.shape, dtype=bool)
    counts, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return volume > centres[int(np.argmax(between))]


#: Every STRIDE-th voxel along each axis is compared (a head mask needs no finer grid; 8x less work).
STRIDE = 2


def agreement(volume: np.ndarray, reference_head: np.ndarray, affine: np.ndarray, *, modality: str,
              reference: str, covered: Optional[np.ndarray] = None) -> Agreement:
    """How ``volume`` (resampled onto the reference grid ``affine``) agrees with the reference series.

    ``reference_head`` is :func:`head_mask` of the reference series and ``covered`` the series' field of
    view, both on every :data:`STRIDE`-th voxel of the reference grid (``covered`` None: all of it).
    """
    sample = (slice(None, None, STRIDE),) * volume.ndim
    affine = affine @ np.diag([STRIDE] * volume.ndim + [1])
    volume = volume[sample]
    inside = np.ones(volume.shape, dtype=bool) if covered is None else covered
    overlap = float(inside.mean())
    mask, reference_mask = head_mask(volume) & inside, reference_head & inside
    total = int(mask.sum()) + int(reference_mask.sum())
    dice = 2.0 * float(np.logical_and(mask, reference_mask).sum()) / total if total else 1.0
    if mask.any() and reference_mask.any():
        centres = [np.append(np.argwhere(m).mean(axis=0), 1.0) for m in (mask, reference_mask)]
        shift = float(np.linalg.norm((affine @ centres[0])[:3] - (affine @ centres[1])[:3]))
    else:
        shift = 0.0
    return Agreement(modality, reference, dice, shift, overlap)
