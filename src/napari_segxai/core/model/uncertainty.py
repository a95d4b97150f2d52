"""Where the model is unsure: per-voxel predictive entropy and mutual information of an ensemble of segmentations.

The ensemble is one of (:data:`MODES`, the user's choice):

- ``checkpoints``: the training checkpoints the model recorded (``segxai train``, TrainingRecorder),
  or the folds of an nnU-Net model (a snapshot ensemble, Huang et al. 2017);
- ``flips``: test-time flips of the case along every subset of its spatial axes (2^D runs);
- ``dropout``: Monte Carlo dropout, the network's dropout layers kept on (Gal & Ghahramani 2016).

Every member is one run of :func:`.inference.segment` (its preprocessing and sliding windows) with
the class probabilities ``p_m`` back on the case's grid. With ``p̄`` their mean, per voxel::

    entropy             H[p̄]                     (predictive entropy, nats)
    mutual information  H[p̄] - mean_m H[p_m]     (BALD, Houlsby et al. 2011: what the members disagree on)

For a softmax model ``H`` is the categorical entropy (at most ln K); for a sigmoid model the sum of
the classes' binary entropies (at most K ln 2).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional, Union

import numpy as np
import torch

from ..progress import CancelFn, ProgressFn
from .card import ModelCard
from .device import pick_device
from .inference import Segmentation, segment
from .uncertainty_members import DEFAULT_SAMPLES, MODES, Member, check_mode, flipped_case, plan_members, unflip

if TYPE_CHECKING:
    from ..case import Case

__all__ = ["DEFAULT_SAMPLES", "DEFAULT_THRESHOLD", "MODES", "Uncertainty", "entropy_and_mutual_information",
           "segment_with_uncertainty", "uncertain_region", "uncertainty", "uncertainty_paths",
           "write_uncertainty"]

#: Entropy (nats) above which a voxel counts as uncertain unless the user says otherwise.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, eq=False)
class Uncertainty:
    """Predictive entropy and mutual information of one case, on the case's own voxel grid (nats)."""

    entropy: np.ndarray             # (X, Y, Z) float32
    mutual_information: np.ndarray  # (X, Y, Z) float32, 0 <= MI <= entropy
    mode: str                       # one of MODES
    members: tuple[str, ...]        # the runs averaged, in order ("flip x", "checkpoint step 497", ...)
    affine: np.ndarray              # the case's affine
    max_entropy: float              # ln K (softmax) or K ln 2 (sigmoid): the scale of both maps
    device: str
    seconds: float

    def describe(self) -> str:
        """One line: what was measured, from how many runs, and the largest values."""
        return (f"{self.mode} ensemble of {len(self.members)} runs: entropy up to {float(self.entropy.max()):.3f} "
                f"and mutual information up to {float(self.mutual_information.max()):.3f} nats "
                f"(at most {self.max_entropy:.3f})")


def class_entropy(probabilities: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """Per-voxel entropy (nats) of class probabilities (K, *spatial): categorical (softmax) or summed binary (sigmoid)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if activation == "softmax":
        return -_xlogx(p).sum(axis=0)
    if activation == "sigmoid":
        return -(_xlogx(p) + _xlogx(1.0 - p)).sum(axis=0)
    raise ValueError(f"Unknown activation {activation!r}; use softmax or sigmoid.")


def _xlogx(p: np.ndarray) -> np.ndarray:
    """p ln p with 0 ln 0 = 0."""
    out = np.zeros_like(p)
    np.multiply(p, np.log(p, out=np.full_like(p, -np.inf), where=p > 0), out=out, where=p > 0)
    return out


class _Moments:
    """Running sums of the members' probabilities and entropies: one member's maps held at a time."""

    def __init__(self, activation: str):
        self.activation, self.count = activation, 0
        self.probabilities: Optional[np.ndarray] = None
        self.entropies: Optional[np.ndarray] = None

    def add(self, probabilities: np.ndarray) -> None:
        p = np.asarray(probabilities, dtype=np.float64)
        h = class_entropy(p, self.activation)
        if self.probabilities is None:
            self.probabilities, self.entropies = p.copy(), h
        else:
            if p.shape != self.probabilities.shape:
                raise ValueError(f"Ensemble member {self.count + 1} gave class maps shaped {p.shape}, the first "
                                 f"{self.probabilities.shape}; every member must predict the same classes on one grid.")
            self.probabilities += p
            self.entropies += h
        self.count += 1

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            raise ValueError("An ensemble needs at least one member's class probabilities.")
        entropy = class_entropy(self.probabilities / self.count, self.activation)
        mutual = np.clip(entropy - self.entropies / self.count, 0.0, None)  # >= 0 by Jensen; rounding aside
        return entropy.astype(np.float32), np.minimum(mutual, entropy).astype(np.float32)


def entropy_and_mutual_information(members: Iterable[np.ndarray], activation: str = "softmax") -> tuple[np.ndarray, np.ndarray]:
    """Predictive entropy H[mean p] and mutual information H[mean p] - mean H[p] of class maps (K, *spatial), in nats."""
    moments = _Moments(activation)
    for probabilities in members:
        moments.add(probabilities)
    return moments.result()


def max_entropy(n_classes: int, activation: str) -> float:
    """The largest entropy a voxel can have: ln K for softmax, K ln 2 for sigmoid."""
    return math.log(n_classes) if activation == "softmax" else n_classes * math.log(2.0)


def uncertainty(
    case: Case,
    card: ModelCard,
    mode: str = "flips",
    *,
    network: Optional[torch.nn.Module] = None,
    device: Union[str, torch.device, None] = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> Uncertainty:
    """Entropy and mutual information of ``case`` from the ``mode`` ensemble of ``card`` (runs of :func:`segment`).

    ``network`` replaces the card's own (flips, dropout); ``samples`` and ``seed`` set MC dropout's runs.
    Progress is reported as windows done of all runs' windows; ``should_cancel`` stops between windows.
    """
    return _run(case, card, mode, network=network, device=device, samples=samples, seed=seed, progress=progress,
                should_cancel=should_cancel, with_segmentation=False)[1]


def segment_with_uncertainty(
    case: Case,
    card: ModelCard,
    mode: str = "flips",
    *,
    network: Optional[torch.nn.Module] = None,
    device: Union[str, torch.device, None] = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> tuple[Segmentation, Uncertainty]:
    """The card's segmentation of ``case`` and its :func:`uncertainty`, as one job with one progress count.

    The segmentation is the model's own (no flip, no dropout, the card's final weights); with flips it is
    the ensemble's unflipped run, so it costs nothing extra.
    """
    return _run(case, card, mode, network=network, device=device, samples=samples, seed=seed, progress=progress,
                should_cancel=should_cancel, with_segmentation=True)


def _run(case, card, mode, *, network, device, samples, seed, progress, should_cancel, with_segmentation):
    start = time.perf_counter()
    check_mode(mode)
    device = pick_device(device)
    members = plan_members(case, card, mode, network=network, device=device, samples=samples, seed=seed)
    plain: Optional[Segmentation] = None
    runs: list[tuple[Member, bool]] = [(m, True) for m in members]
    if with_segmentation and mode != "flips":  # flips: the unflipped member is the plain segmentation
        runs.insert(0, (Member("model", lambda d: network, ()), False))
    moments = _Moments(card.activation)
    modes = {} if network is None else {module: module.training for module in network.modules()}
    try:
        for index, (member, averaged) in enumerate(runs):
            result = _segment_member(case, card, member, device, _RunProgress(progress, index, len(runs)),
                                     should_cancel)
            if with_segmentation and (not averaged or (plain is None and not member.flip_axes)):
                plain = result
            if averaged:
                moments.add(unflip(result.probabilities, member.flip_axes))
            del result
    finally:  # the caller's network leaves as it came (MC dropout switched its dropout layers on)
        for module, training in modes.items():
            module.training = training
    entropy, mutual = moments.result()
    measured = Uncertainty(
        entropy=entropy, mutual_information=mutual, mode=mode, members=tuple(m.name for m in members),
        affine=np.array(case.affine, dtype=np.float64), max_entropy=max_entropy(len(card.classes), card.activation),
        device=str(device), seconds=time.perf_counter() - start,
    )
    return plain, measured


def _segment_member(case, card, member: Member, device, progress, should_cancel) -> Segmentation:
    """One run: the member's network on the (flipped) case, seeded when it samples dropout."""
    network = member.network(device)
    if member.seed is None:
        return segment(flipped_case(case, member.flip_axes), card, network=network, device=device,
                       progress=progress, should_cancel=should_cancel)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's random state is left as it was
        torch.manual_seed(member.seed)
        return segment(flipped_case(case, member.flip_axes), card, network=network, device=device,
                       progress=progress, should_cancel=should_cancel)


class _RunProgress:
    """(done, total) of one run as (done, total) of all ``runs`` runs (each run counts its own windows)."""

    def __init__(self, progress: Optional[ProgressFn], index: int, runs: int):
        self.progress, self.index, self.runs = progress, index, runs

    def __call__(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(self.index * total + done, self.runs * total)


def uncertain_region(measured: Uncertainty, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """The voxels whose entropy exceeds ``threshold`` (nats), as a boolean array on the case grid.

    ValueError with a sentence when the threshold is out of range or no voxel passes it.
    """
    threshold = float(threshold)
    if not 0.0 <= threshold < measured.max_entropy:
        raise ValueError(f"The entropy threshold must be in [0, {measured.max_entropy:.3f}) nats (the largest "
                         f"entropy this model's classes allow), got {threshold:g}.")
    region = measured.entropy > threshold
    if not region.any():
        raise ValueError(f"No voxel has an entropy above {threshold:g} nats (the highest is "
                         f"{float(measured.entropy.max()):.3f}); lower the threshold.")
    return region


def uncertainty_paths(case_name: str, out) -> tuple:
    """Where the entropy and the mutual information of ``case_name`` are written in ``out``."""
    from pathlib import Path

    return Path(out) / f"{case_name}_entropy.nii.gz", Path(out) / f"{case_name}_mutual_information.nii.gz"


def write_uncertainty(measured: Uncertainty, case_name: str, out, *, protected=()) -> tuple:
    """Write the entropy and the mutual information as NIfTI (nats, float32) with the case's affine."""
    from ..io.nifti import save_nifti

    entropy_path, mutual_path = uncertainty_paths(case_name, out)
    return (save_nifti(measured.entropy, measured.affine, entropy_path, protected=protected),
            save_nifti(measured.mutual_information, measured.affine, mutual_path, protected=protected))
