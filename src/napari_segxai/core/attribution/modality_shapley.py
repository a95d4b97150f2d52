"""Exact Shapley values of the input sequences: Shapley 1953, the value of a coalition of channels.

Each input channel (MRI sequence) is a player; the value of a coalition S of present channels
is each class's target scalar (the class output summed over its target region) with the
channels outside S replaced by a baseline. With M channels all 2^M coalitions are evaluated, so
the values are exact, not sampled, and add up to S(x) - S(every channel at its baseline). One
set of forward passes serves every class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import progress as _progress
from .base import AttributionMethod, Parameter, Relevance, check_inputs, register, samples_per_batch
from .baselines import make_baseline
from .cost import Passes
from .targets import Target

SEQUENCE_BASELINES = ("mean", "zeros", "blurred")
# 2^12 = 4,096 forward passes; above that exact enumeration stops being a default-cost method.
MAX_CHANNELS = 12


@dataclass(frozen=True)
class SequenceValues:
    """Shapley value of every input sequence (channel) for every explained class, with the two ends of the game."""

    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]
    values: np.ndarray        # float64 (K_t, C): phi of each channel for each class; rows sum to full - empty
    full: np.ndarray          # float64 (K_t,): each class's target scalar with every channel present
    empty: np.ndarray         # float64 (K_t,): the same with every channel at its baseline
    baseline: str = ""

    @property
    def shares(self) -> np.ndarray:
        """|phi_c| / sum_c |phi_c| per class (K_t, C): which sequence carries the class (zeros for a class of no value)."""
        magnitude = np.abs(self.values)
        total = magnitude.sum(axis=1, keepdims=True)
        return np.divide(magnitude, total, out=np.zeros_like(magnitude), where=total > 0)

    def carrier(self, class_name: str) -> str:
        """The sequence with the largest |phi| for a class."""
        return self.channel_names[int(np.argmax(self.shares[self._row(class_name)]))]

    def for_class(self, class_name: str) -> dict[str, float]:
        """The Shapley value of each sequence for one class, by sequence name."""
        row = self.values[self._row(class_name)]
        return {name: float(v) for name, v in zip(self.channel_names, row)}

    def lines(self) -> list[str]:
        """One line per class, sequences by share, largest first: ``edema: flair 62%, t2 25%, ...``."""
        shares = self.shares
        lines = []
        for k, name in enumerate(self.class_names):
            order = np.argsort(-shares[k], kind="stable")
            parts = ", ".join(f"{self.channel_names[c]} {shares[k, c]:.0%}{'' if self.values[k, c] >= 0 else ' (-)'}"
                              for c in order)
            lines.append(f"{name}: {parts}")
        return lines

    def _row(self, class_name: str) -> int:
        if class_name not in self.class_names:
            raise ValueError(f"Class {class_name!r} was not explained; explained: {', '.join(self.class_names)}.")
        return self.class_names.index(class_name)


def sequence_baseline(inputs: torch.Tensor, kind: str, blur_sigma: float = 5.0) -> torch.Tensor:
    """The input (1, C, *spatial) with every channel at its baseline: brain mean, zeros or a blurred copy.

    ``mean``: each channel's non-zero voxels (the brain: zscore_nonzero and the usual skull-stripped
    inputs keep the background at exactly 0) set to the channel's mean over those voxels; the
    background stays 0, so the brain's outline is kept and only the sequence's contrast is removed.
    """
    if kind == "mean":
        foreground = inputs != 0
        count = foreground.flatten(2).sum(2).clamp_min(1)
        mean = (inputs * foreground).flatten(2).sum(2) / count           # (1, C)
        return torch.where(foreground, mean.view(*mean.shape, *([1] * (inputs.ndim - 2))), inputs.new_zeros(()))
    if kind in SEQUENCE_BASELINES:
        return make_baseline(inputs, kind, blur_sigma)
    raise ValueError(f"Unknown sequence baseline {kind!r}; choose one of {', '.join(SEQUENCE_BASELINES)}.")


def coalition_masks(m: int) -> torch.Tensor:
    """Every coalition of ``m`` players as 0/1 rows (2^m, m): row s keeps player i when bit i of s is set."""
    index = torch.arange(2**m).unsqueeze(1)
    return ((index >> torch.arange(m)) & 1).double()


def shapley_from_coalitions(values: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values (K_t, m) from the values (2^m, K_t) of every coalition (row s: bit i keeps player i).

    phi_i = sum over S not holding i of |S|! (m - |S| - 1)! / m! * (v(S + i) - v(S)).
    """
    n = values.shape[0]
    m = n.bit_length() - 1
    if n != 2**m:
        raise ValueError(f"Coalition values need 2^m rows, got {n}.")
    sizes = coalition_masks(m).sum(1).long()
    weight = torch.tensor([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)],
                          dtype=torch.float64)
    values = values.double()
    phi = values.new_zeros((m, values.shape[1]))
    subsets = torch.arange(n)
    for i in range(m):
        without = subsets[(subsets >> i) & 1 == 0]
        gain = values[without | (1 << i)] - values[without]
        phi[i] = (weight[sizes[without]].unsqueeze(1) * gain).sum(0)
    return phi.T


def coalition_values(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    target: Target,
    *,
    batch_size: int = 0,
    skip_full: bool = False,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> torch.Tensor:
    """Target scalars (2^C, K_t) of the input with each coalition of channels kept, the rest at the baseline.

    With ``skip_full`` the last row (every channel kept) is left as NaN for the caller to fill.
    """
    m = inputs.shape[1]
    masks = coalition_masks(m).to(device=inputs.device, dtype=inputs.dtype)
    n = masks.shape[0] - (1 if skip_full else 0)
    batch = samples_per_batch(network, inputs, n, batch_size, with_gradients=False, maps_per_sample=1)
    shape = (-1, m) + (1,) * (inputs.ndim - 2)
    difference = inputs - baseline
    out = torch.full((masks.shape[0], len(target.classes)), float("nan"), dtype=torch.float64, device=inputs.device)
    with torch.no_grad():
        # batches sized to about PACE_SECONDS each unless a batch size is given: the bar moves, Cancel is heard
        parts = (_progress.paced(n, batch, progress, should_cancel) if batch_size == 0 else
                 (slice(start, min(start + batch, n)) for start in range(0, n, batch)))
        for part in parts:
            _progress.step(part.start, n, progress, should_cancel)
            out[part] = target.scalars(network(baseline + masks[part].view(shape) * difference)).double()
    _progress.step(n, n, progress, None)
    return out


def sequence_shapley(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    target: Target,
    *,
    baseline: str = "mean",
    blur_sigma: float = 5.0,
    batch_size: int = 0,
    class_names: Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> SequenceValues:
    """The exact Shapley value of each input channel for each class of ``target`` (2^C forward passes, no gradients)."""
    method = ModalityShapley(baseline=baseline, blur_sigma=blur_sigma, batch_size=batch_size)
    inputs = method.checked(inputs, target)
    reference = method.baseline_of(inputs)
    with torch.no_grad():
        values = coalition_values(network, inputs, reference, target, batch_size=batch_size, progress=progress,
                                  should_cancel=should_cancel)
    classes = tuple(class_names) if class_names is not None else tuple(f"class {c}" for c in target.classes)
    channels = tuple(channel_names) if channel_names is not None else tuple(f"channel {i}" for i in range(inputs.shape[1]))
    if len(classes) != len(target.classes) or len(channels) != inputs.shape[1]:
        raise ValueError(f"Got {len(classes)} class and {len(channels)} channel names for {len(target.classes)} "
                         f"classes and {inputs.shape[1]} channels; name each once.")
    return SequenceValues(classes, channels, shapley_from_coalitions(values).cpu().numpy(),
                          values[-1].cpu().numpy(), values[0].cpu().numpy(), baseline)


def sequence_values(relevance: Relevance) -> SequenceValues:
    """The per-sequence Shapley values of a ``modality_shapley`` result: each class's map summed per channel.

    Exact on the grid the method ran on (``explain``, the trust measures, ``segxai evaluate``,
    ``explain_case`` on a case already on the model's grid); where ``explain_case`` resampled the
    maps to a finer or coarser case grid, every value scales by about the ratio of voxel volumes and
    the shares keep to within the interpolation at the region's border.
    """
    if relevance.method != ModalityShapley.name:
        raise ValueError(f"Sequence values come from modality_shapley maps, not {relevance.method}; "
                         "explain with method modality_shapley.")
    return values_from_maps(relevance.relevance, relevance.class_names, relevance.channel_names,
                            str(relevance.parameters.get("baseline", "")))


def values_from_maps(maps, class_names: Sequence[str], channel_names: Sequence[str], baseline: str) -> SequenceValues:
    """SequenceValues from modality_shapley maps (K_t, C, *spatial, array or tensor): each channel's map summed."""
    maps = maps.detach().double().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float64)
    values = maps.reshape(maps.shape[0], maps.shape[1], -1).sum(2)
    nan = np.full(len(class_names), np.nan)
    return SequenceValues(tuple(class_names), tuple(channel_names), values, nan, nan, baseline)


@register("modality_shapley")
class ModalityShapley(AttributionMethod):
    """Exact Shapley values of the input sequences (channels) per class, spread over each channel's |gradient x input|.

    Shapley 1953 over the C input channels (all 2^C coalitions, absent channels at a baseline).
    Channel c's map for class k is phi_kc * |g_kc x|/ sum |g_kc x|: it sums to phi_kc, has one
    sign, and its share of the class's L1 norm is |phi_kc| / sum |phi_k|. ``sequence_values``
    reads the numbers back from a result.
    """

    signed = True
    uses_baseline = True
    parameters = {
        "baseline": Parameter("mean", "value of an absent sequence: its brain mean (non-zero voxels; background "
                              "kept at 0), zeros (after normalisation), or a Gaussian-blurred copy",
                              choices=SEQUENCE_BASELINES),
        "blur_sigma": Parameter(5.0, "Gaussian sigma in voxels of the blurred baseline", minimum=0.0),
        "batch_size": Parameter(0, "coalitions per forward pass; 0 chooses from free memory", minimum=0),
    }

    def baseline_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every channel at its baseline: the fixed one if set, else ``sequence_baseline`` of the parameters."""
        if self._fixed_baseline is not None:
            return super().baseline_of(inputs)
        return sequence_baseline(inputs, self.params["baseline"], self.params["blur_sigma"])

    def checked(self, inputs: torch.Tensor, target: Target) -> torch.Tensor:
        """The input as ``attribute`` takes it, refused when it has too many channels for exact enumeration."""
        inputs = check_inputs(inputs, target)
        if inputs.shape[1] > MAX_CHANNELS:
            raise ValueError(f"modality_shapley enumerates 2^C channel coalitions and stops at {MAX_CHANNELS} "
                             f"channels; this input has {inputs.shape[1]}: use kernel_shap or occlusion.")
        return inputs

    backpropagates = True

    def passes(self, shape, target) -> Passes:
        """One forward pass per coalition of sequences (2^C), one backward per class for the maps' weights."""
        return Passes(2 ** shape[0], len(target.classes), batch=self.params["batch_size"], maps=1)

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        inputs = self.checked(inputs, target)
        reference = self.baseline_of(inputs)
        n_coalitions, n_classes = 2 ** inputs.shape[1], len(target.classes)
        total = n_coalitions - 1 + n_classes

        def later(done: int, count: int) -> None:
            if progress is not None:
                progress(n_coalitions - 1 + done, total)

        values = coalition_values(network, inputs, reference, target, batch_size=self.params["batch_size"],
                                  skip_full=True, progress=None if progress is None else lambda d, t: progress(d, total),
                                  should_cancel=should_cancel)
        # The all-present coalition is the input itself: its forward pass also gives the gradients.
        full, gradients = _scalars_and_gradients(network, inputs, target, later, should_cancel)
        values[-1] = full
        phi = shapley_from_coalitions(values).to(inputs.dtype)              # (K_t, C)
        weights = (gradients * inputs).abs()                                 # (K_t, C, *spatial)
        return phi.view(*phi.shape, *([1] * (inputs.ndim - 2))) * _normalised(weights, (inputs - reference).abs())


def _scalars_and_gradients(network, inputs, target, progress, should_cancel) -> tuple[torch.Tensor, torch.Tensor]:
    """Target scalars (K_t,) of the input and their gradients (K_t, C, *spatial): one forward, one backward per class."""
    x = inputs.detach().requires_grad_(True)
    n = len(target.classes)
    grads = []
    with torch.enable_grad():
        scalars = target.scalars(network(x))[0]
        for k in range(n):
            _progress.step(k, n, progress, should_cancel)
            (grad,) = torch.autograd.grad(scalars[k], x, retain_graph=k < n - 1)
            grads.append(grad[0])
    _progress.step(n, n, progress, None)
    return scalars.detach().double(), torch.stack(grads)


def _normalised(weights: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Each (class, channel) map of ``weights`` divided by its sum; where that is 0, |x - baseline|'s, else uniform."""
    spatial = tuple(range(2, weights.ndim))
    total = weights.sum(spatial, keepdim=True)
    fallback = fallback.expand_as(weights)
    spare = fallback.sum(spatial, keepdim=True)
    uniform = torch.ones_like(weights) / math.prod(weights.shape[2:])
    shaped = torch.where(spare > 0, fallback / spare.clamp_min(torch.finfo(weights.dtype).tiny), uniform)
    return torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), shaped)
