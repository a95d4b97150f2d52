"""Do the series of a study show the same head in the same place? Head masks compared after resampling.

napari-segxai puts the series of a DICOM study on one grid by the scanner's patient coordinates and
does not register them. A patient who moved between series leaves the series misaligned, and the
model then reads a FLAIR voxel that belongs somewhere else. This check makes that visible: each
series' head mask (Otsu's threshold of its intensities) is compared with the reference series' mask
inside the field of view both cover, by Dice overlap and by the distance between the masks' centres.
A series is reported when the Dice is below :data:`MIN_DICE` or the centres are more than
:data:`MAX_SHIFT_MM` apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Head masks overlapping less than this (Dice) are reported as possibly misregistered.
MIN_DICE = 0.85
#: Head-mask centres further apart than this (mm) are reported as possibly misregistered.
MAX_SHIFT_MM = 5.0


@dataclass(frozen=True)
class Agreement:
    """How one series' head mask agrees with the reference series' mask."""

    modality: str
    reference: str
    dice: float
    shift_mm: float

    @property
    def misregistered(self) -> bool:
        """Whether the masks disagree beyond :data:`MIN_DICE` or :data:`MAX_SHIFT_MM`."""
        return self.dice < MIN_DICE or self.shift_mm > MAX_SHIFT_MM

    def sentence(self) -> str:
        """The agreement in words, with the thresholds."""
        verdict = ("may be misregistered (napari-segxai does not register series; register them first, "
                   "e.g. with ANTs or elastix)" if self.misregistered else "agree")
        return (f"{self.modality} and {self.reference}: head masks overlap with Dice {self.dice:.2f} and their "
                f"centres are {self.shift_mm:.1f} mm apart, so they {verdict} (reported below Dice "
                f"{MIN_DICE:.2f} or beyond {MAX_SHIFT_MM:.0f} mm).")


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


def agreement(volume: np.ndarray, reference_volume: np.ndarray, affine: np.ndarray, *, modality: str,
              reference: str, covered: Optional[np.ndarray] = None) -> Agreement:
    """How ``volume`` (resampled onto the reference grid; ``covered`` its field of view there) agrees."""
    inside = np.ones(volume.shape, dtype=bool) if covered is None else covered
    mask, reference_mask = head_mask(volume) & inside, head_mask(reference_volume) & inside
    total = int(mask.sum()) + int(reference_mask.sum())
    dice = 2.0 * float(np.logical_and(mask, reference_mask).sum()) / total if total else 1.0
    if mask.any() and reference_mask.any():
        centres = [np.append(np.argwhere(m).mean(axis=0), 1.0) for m in (mask, reference_mask)]
        shift = float(np.linalg.norm((affine @ centres[0])[:3] - (affine @ centres[1])[:3]))
    else:
        shift = 0.0
    return Agreement(modality, reference, dice, shift)
