"""Is a case inside what the model knows? Input checks and a feature distance to the training set (docs/domain.md).

:func:`check_domain` runs on every segmentation and says "in distribution" or "out of distribution:
<reasons>". Two kinds of evidence:

- input checks: the card's modalities are present and carry signal, the voxel values are finite,
  the head (voxels with signal in some channel, see :func:`.inference.outside_head`) is a
  plausible volume, and each channel's 1st/50th/99th percentiles inside the head after the card's
  preprocessing lie near the training cases' range;
- a feature distance (models trained with ``segxai train``, whose training record names the
  training cases): the network's deepest features pooled over the head, compared with the
  training cases' by k-nearest-neighbour distance, flagged above a threshold calibrated on
  held-out training-like cases (:mod:`.domain_reference`).

Models without a training record (nnU-Net folders, MONAI bundles) get the input checks only, with
nothing to compare the intensities and volume with but plausibility, and the verdict says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch

from .card import ModelCard
from .domain_reference import (PERCENTILES, SURE, DomainReference, head_volume_ml, intensity_percentiles,
                               lesion_confidence, lesion_parts)
from .inference import silent_voxels

if TYPE_CHECKING:
    from ..case import Case

__all__ = ["DomainCheck", "check_domain", "head_volume_ml", "intensity_percentiles", "silent_voxels"]

#: A percentile is flagged beyond the training range widened by this many times its width (at least 0.5).
INTENSITY_TOLERANCE = 1.0
#: A head or lesion volume is flagged below half the smallest or above twice the largest training case's.
VOLUME_FACTOR = 2.0
#: A lesion is flagged as scattered when its largest part holds under this share of the smallest share among
#: the training lesions (each training lesion one mass: 99% in its largest part, so under 50% is flagged).
FOCALITY_FACTOR = 0.5
#: A lesion is flagged as unsure when the model is sure of under this share of the smallest share it was sure of
#: on the calibration cases' predicted lesions (:func:`.domain_reference.lesion_confidence`).
CONFIDENCE_FACTOR = 0.5
#: Below this share of the volume with signal, a case has almost no head in it (any model).
MIN_HEAD_SHARE = 0.01


@dataclass(frozen=True)
class DomainCheck:
    """Whether a case is inside what the model was trained on, and why not."""

    reasons: tuple[str, ...]          # empty when in distribution
    measurements: tuple[str, ...]     # what was measured, one line each
    distance: Optional[float] = None  # k-NN feature distance to the training cases (None: no training record)
    threshold: Optional[float] = None
    note: str = ""                    # what could not be checked

    @property
    def in_distribution(self) -> bool:
        return not self.reasons

    @property
    def verdict(self) -> str:
        """'in distribution' or 'out of distribution: <reasons>'."""
        return "in distribution" if self.in_distribution else "out of distribution: " + "; ".join(self.reasons)

    def describe(self) -> str:
        """The verdict with the feature distance, or with what could not be checked."""
        if self.distance is not None:
            return f"{self.verdict} (feature distance {self.distance:.2f}, threshold {self.threshold:.2f})"
        return f"{self.verdict} ({self.note})" if self.note else self.verdict


def check_domain(case: Case, card: ModelCard, *, network: Optional[torch.nn.Module] = None,
                 device: Union[str, torch.device, None] = None, reference: Optional[DomainReference] = None,
                 segmentation=None, progress=None) -> DomainCheck:
    """Input checks and, for models with a training record, the feature distance of ``case`` to the training set.

    ``segmentation``, the model's :class:`.inference.Segmentation` of the case, adds the lesion checks:
    a predicted lesion far outside the training cases' (none at all, a largest part far smaller or a
    volume far larger than theirs, or scattered over parts where each of theirs was one mass), or one
    the model is sure of on far less of it than on the cases it was calibrated on.

    ``reference`` defaults to the model's (:func:`.domain_reference.domain_reference`: shipped beside
    the bundled model, else computed once and cached, reporting ``progress``).
    """
    from .device import pick_device
    from .domain_reference import domain_reference, has_reference, pooled_features
    from .preprocess import channel_indices, preprocess

    device = pick_device(device)
    reasons, measurements = [], []
    indices = channel_indices(case, card)
    measurements.append("modalities: " + ", ".join(f"{m} = channel {i}" for m, i in zip(card.modalities, indices)))
    for name, index in zip(card.modalities, indices):
        channel = np.asarray(case.channels[index])
        if not np.isfinite(channel).all():
            reasons.append(f"{name} has non-finite values (NaN or infinity)")
    volume, share = head_volume_ml(case, card)
    measurements.append(f"head: {volume:.0f} mL, {100 * share:.1f}% of the volume has signal")
    if share < MIN_HEAD_SHARE:
        reasons.append(f"almost no signal ({100 * share:.2f}% of the voxels are not background)")
    if reference is None and has_reference(card):
        reference = domain_reference(card, network=network, device=device, progress=progress)
    with torch.inference_mode():
        image, _ = preprocess(case, card, device=device)
        percentiles = intensity_percentiles(image)
    for name, values in zip(card.modalities, percentiles):
        measurements.append(f"{name} after preprocessing, percentiles {'/'.join(f'{p:g}' for p in PERCENTILES)} "
                            f"inside the head: {'/'.join(f'{v:.2f}' for v in values)}")
    if reference is None:
        return DomainCheck(tuple(reasons), tuple(measurements),
                           note="no training record: input checks only (modalities, finite values, head coverage)")
    reasons += _compare_inputs(card, percentiles, volume, reference)
    if segmentation is not None:
        lesion = lesion_parts(segmentation.labels, segmentation.affine)
        measurements.append(f"predicted lesion: {lesion[0]:.1f} mL in {lesion[3]} connected part(s), the largest "
                            f"{lesion[1]:.1f} mL ({100 * lesion[2]:.0f}%)")
        reasons += _compare_lesion(*lesion, reference)
        sure = lesion_confidence(segmentation.probabilities, segmentation.labels, card.activation)
        if np.isfinite(sure):
            measurements.append(f"the model is sure (lesion probability at least {SURE:.0%}) of {sure:.0%} of the "
                                f"predicted lesion")
            reasons += _compare_confidence(sure, reference)
    from .card import build_network

    network = build_network(card, device) if network is None else network.to(device).eval()
    with torch.inference_mode():
        features = pooled_features(network, image, card, reference.layer)
    distance = reference.distance(features)
    measurements.append(f"feature distance {distance:.2f} to the {len(reference.features)} training cases "
                        f"(threshold {reference.threshold:.2f}, from held-out cases)")
    if distance > reference.threshold:
        reasons.append(f"its network features are far from every training case's (distance {distance:.2f}, "
                       f"threshold {reference.threshold:.2f})")
    return DomainCheck(tuple(reasons), tuple(measurements), distance=distance, threshold=reference.threshold)


def _compare_inputs(card: ModelCard, percentiles: np.ndarray, volume: float,
                    reference: DomainReference) -> list[str]:
    """Reasons why the case's intensities or head volume are unlike the training cases'."""
    reasons = []
    low, high = reference.percentiles.min(axis=0), reference.percentiles.max(axis=0)  # (C, P)
    tolerance = np.maximum(INTENSITY_TOLERANCE * (high - low), 0.5)
    for c, name in enumerate(card.modalities):
        for p, percentile in enumerate(PERCENTILES):
            value = float(percentiles[c, p])
            if not low[c, p] - tolerance[c, p] <= value <= high[c, p] + tolerance[c, p]:
                reasons.append(f"{name}'s {percentile:g}th percentile after preprocessing is {value:.2f}, the "
                               f"training cases' lie in {low[c, p]:.2f} to {high[c, p]:.2f}")
                break
    smallest, largest = float(reference.volumes.min()), float(reference.volumes.max())
    if not smallest / VOLUME_FACTOR <= volume <= largest * VOLUME_FACTOR:
        reasons.append(f"the head with signal is {volume:.0f} mL, the training cases' {smallest:.0f} to "
                       f"{largest:.0f} mL (not skull-stripped, or cropped?)")
    return reasons


def _compare_lesion(volume: float, largest: float, share: float, parts: int, reference: DomainReference) -> list[str]:
    """Why a predicted lesion (:func:`.domain_reference.lesion_parts`) is unlike the training lesions; [] when alike or unknown."""
    known = np.isfinite(reference.lesions)
    if not known.any():
        return []
    volumes, largests, shares = reference.lesions[known], reference.largest[known], reference.focality[known]
    smallest, most = float(volumes.min()), float(volumes.max())
    if volume == 0 and smallest > 0:
        return [f"no lesion predicted, and every training case had one (the smallest {smallest:.1f} mL): the model "
                f"was never trained on a case without one, so its 'no finding' is untested"]
    reasons = []
    low = float(largests.min())
    if largest < low / VOLUME_FACTOR:
        reasons.append(f"the largest predicted lesion is {largest:.1f} mL, the training cases' {low:.1f} to "
                       f"{float(largests.max()):.1f} mL: the model was not trained on lesions this small")
    if volume > most * VOLUME_FACTOR:
        reasons.append(f"the predicted lesion is {volume:.1f} mL, the training cases' {smallest:.1f} to {most:.1f} mL: "
                       f"the model was not trained on lesions this large")
    focal = float(shares.min())
    if share < focal * FOCALITY_FACTOR:
        reasons.append(f"the predicted lesion is scattered over {parts} separate parts, the largest holding "
                       f"{100 * share:.0f}% of it, while each training case's lesion was one main mass (at least "
                       f"{100 * focal:.0f}% in its largest part): the model was not trained on scattered lesions, "
                       f"so either the case has several and the model is outside what it learned, or some parts "
                       f"are false findings")
    return reasons


def _compare_confidence(sure: float, reference: DomainReference) -> list[str]:
    """Why the model's confidence in its predicted lesion is unlike its confidence on the calibration cases; [] when alike or unknown."""
    known = reference.confidence[np.isfinite(reference.confidence)]
    if not known.size or sure >= CONFIDENCE_FACTOR * float(known.min()):
        return []
    return [f"the model is sure (lesion probability at least {SURE:.0%}) of only {sure:.0%} of the predicted lesion, "
            f"and of at least {float(known.min()):.0%} on each case it was calibrated on: a finding it is this unsure "
            f"of may be of a kind it was not trained on"]
