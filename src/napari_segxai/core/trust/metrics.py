"""Quality metrics of relevance maps on segmentation targets: faithfulness, deletion, sensitivity, complexity, efficiency.

Every metric explains and perturbs the problem's own target (each class's output summed over its
region), so the function measured is the function explained. A voxel is removed by setting
all its channels to the baseline (zeros, each channel's minimum, or the input blurred).
Perturbed inputs run in batches under the attribution engine's memory cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import progress as _progress
from ..attribution import AttributionMethod
from ..attribution.baselines import BASELINES, make_baseline
from ..attribution.cost import Passes, repeated
from .problem import PERTURBED_MAPS, Problem, part_of, relevance_of, target_scores
from .quality import Column, MetricContext, QualitySettings, QualityMetric, register_metric

@dataclass(frozen=True)
class DeletionCurve:
    """Target output of one class as the most relevant voxels (or random ones) are removed."""

    method: str
    class_name: str
    order: str                  # "relevance" (most relevant first) or "random"
    fractions: np.ndarray       # share of voxels removed at each point, 0 .. 1
    scores: np.ndarray          # the class's explained scalar at each point
    normalised: np.ndarray      # (score - score with everything removed) / (intact - everything removed)
    auc: float                  # area under the normalised curve (lower: the relevant voxels matter more)


def spatial_relevance(relevance: np.ndarray) -> np.ndarray:
    """Relevance of each voxel: the sum over channels of a map (C, *spatial)."""
    return np.asarray(relevance, dtype=np.float64).sum(0)


def removal_baseline(problem: Problem, baseline: str | torch.Tensor, blur_sigma: float = 5.0) -> torch.Tensor:
    """The input every removed voxel takes its values from (1, C, *spatial)."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != problem.inputs.shape:
            raise ValueError(f"The baseline {tuple(baseline.shape)} must have the input's shape {tuple(problem.inputs.shape)}.")
        return baseline.to(problem.inputs)
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}.")
    return make_baseline(problem.inputs, baseline, blur_sigma)


def _removed(problem: Problem, reference: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
    """Copies of the input (B, C, *spatial) with the voxels of each bool mask (B, *spatial) set to the reference."""
    keep = torch.from_numpy(~masks).to(problem.inputs.device).unsqueeze(1)
    return torch.where(keep, problem.inputs, reference)


def faithfulness_correlation(
    problem: Problem,
    relevance: np.ndarray,
    *,
    subset: float = 0.1,
    n_subsets: int = 32,
    baseline: str | torch.Tensor = "zeros",
    subsets: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    batch_size: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> np.ndarray:
    """Faithfulness correlation (Bhatt et al. 2020) per class: Pearson r between relevance summed over random voxel subsets and the output drop when they are removed."""
    # ``subset`` is the share of voxels in each subset; ``subsets`` (flat voxel indices) replaces
    # the seeded random draw. One forward pass per subset gives every class's drop.
    n_voxels = int(np.prod(problem.spatial_shape))
    if subsets is None:
        if not 0 < subset < 1:
            raise ValueError(f"The subset share must be between 0 and 1, got {subset}.")
        if n_subsets < 2:
            raise ValueError(f"Faithfulness correlation needs at least 2 subsets, got {n_subsets}.")
        rng = np.random.default_rng(seed)
        size = max(1, int(round(subset * n_voxels)))
        subsets = [rng.choice(n_voxels, size, replace=False) for _ in range(n_subsets)]
    subsets = [np.asarray(s, dtype=np.int64) for s in subsets]
    reference = removal_baseline(problem, baseline)
    intact = target_scores(problem, lambda a, b: problem.inputs, 1)[0]

    def make(start: int, stop: int) -> torch.Tensor:
        masks = np.zeros((stop - start, n_voxels), dtype=bool)
        for row, index in enumerate(subsets[start:stop]):
            masks[row, index] = True
        return _removed(problem, reference, masks.reshape((-1,) + problem.spatial_shape))

    perturbed = target_scores(problem, make, len(subsets), batch_size=batch_size,
                              progress=progress, should_cancel=should_cancel)
    drops = intact[None, :] - perturbed                              # (n_subsets, K_t)
    flat = relevance.reshape(relevance.shape[0], relevance.shape[1], -1).astype(np.float64).sum(1)
    sums = np.stack([flat[:, s].sum(1) for s in subsets])           # (n_subsets, K_t)
    return np.array([_pearson(sums[:, k], drops[:, k]) for k in range(flat.shape[0])])


def deletion_curve(
    problem: Problem,
    relevance_k: np.ndarray,
    class_index: int,
    *,
    steps: int = 20,
    baseline: str | torch.Tensor = "zeros",
    order: str = "relevance",
    seed: int = 0,
    batch_size: int = 0,
    method: str = "",
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> DeletionCurve:
    """Deletion curve of one class: its output as voxels are removed, most relevant (summed over channels) first, in ``steps`` equal parts."""
    if steps < 1:
        raise ValueError(f"The deletion curve needs at least 1 step, got {steps}.")
    if order not in ("relevance", "random"):
        raise ValueError(f"Unknown deletion order {order!r}; choose relevance or random.")
    n_voxels = int(np.prod(problem.spatial_shape))
    if order == "relevance":
        ranking = np.argsort(-spatial_relevance(relevance_k).ravel(), kind="stable")
    else:
        ranking = np.random.default_rng(seed).permutation(n_voxels)
    fractions, scores = _removal_scores(problem, ranking, steps, baseline, batch_size, progress, should_cancel)
    return _curve(method, problem.class_names[class_index], order, fractions, scores[:, class_index])


def _removal_scores(problem, ranking, steps, baseline, batch_size, progress, should_cancel):
    """Shares of voxels removed (steps + 1 points, 0 to 1) in ``ranking`` order, and every class's scalar at each."""
    n_voxels = int(np.prod(problem.spatial_shape))
    counts = np.array([int(round(j * n_voxels / steps)) for j in range(steps + 1)])
    reference = removal_baseline(problem, baseline)

    def make(start: int, stop: int) -> torch.Tensor:
        masks = np.zeros((stop - start, n_voxels), dtype=bool)
        for row, count in enumerate(counts[start:stop]):
            masks[row, ranking[:count]] = True
        return _removed(problem, reference, masks.reshape((-1,) + problem.spatial_shape))

    scores = target_scores(problem, make, len(counts), batch_size=batch_size, progress=progress,
                           should_cancel=should_cancel)
    return counts / n_voxels, scores


def _curve(method, class_name, order, fractions, scores) -> DeletionCurve:
    """A deletion curve with its normalised form and area."""
    span = scores[0] - scores[-1]
    normalised = (scores - scores[-1]) / span if span != 0 else np.full_like(scores, np.nan)
    auc = float(np.trapezoid(normalised, fractions)) if span != 0 else float("nan")
    return DeletionCurve(method, class_name, order, np.asarray(fractions, float), np.asarray(scores, float),
                         normalised, auc)


def max_sensitivity(
    problem: Problem,
    method: str | AttributionMethod,
    relevance: np.ndarray,
    *,
    n_samples: int = 8,
    radius: float = 0.05,
    seed: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> np.ndarray:
    """Max-sensitivity (Yeh et al. 2019) per class: the largest ||e(x + d) - e(x)|| / ||e(x)|| over noisy inputs."""
    # The noise d is uniform in [-radius s_c, radius s_c] per voxel, s_c the standard deviation of
    # input channel c; the map is recomputed for every noisy input, its progress reported inside.
    if n_samples < 1 or radius <= 0:
        raise ValueError(f"Max-sensitivity needs at least one sample and a positive radius, got {n_samples} and {radius}.")
    generator = torch.Generator().manual_seed(int(seed))
    spread = problem.inputs.transpose(0, 1).flatten(1).std(1).view(1, -1, *([1] * len(problem.spatial_shape)))
    norms = np.sqrt((relevance.reshape(relevance.shape[0], -1).astype(np.float64) ** 2).sum(1))
    worst = np.zeros(relevance.shape[0])
    for i in range(n_samples):
        _progress.step(i, n_samples, progress, should_cancel)
        noise = (torch.rand(problem.inputs.shape, generator=generator, dtype=torch.float64) * 2 - 1)
        noisy = problem.inputs + radius * spread * noise.to(problem.inputs)
        other, _ = relevance_of(problem, method, inputs=noisy, progress=part_of(progress, i, n_samples),
                                should_cancel=should_cancel)
        change = np.sqrt(((other - relevance).reshape(relevance.shape[0], -1).astype(np.float64) ** 2).sum(1))
        worst = np.maximum(worst, np.divide(change, norms, out=np.full_like(change, np.inf), where=norms > 0))
    _progress.step(n_samples, n_samples, progress, None)
    return worst


def complexity(relevance: np.ndarray, *, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: share of voxels above ``threshold`` x the maximum |relevance|, entropy (nats) of the normalised |relevance|, and that entropy / log(voxels)."""
    # A voxel's |relevance| is the sum over channels of the absolute map.
    if not 0 <= threshold < 1:
        raise ValueError(f"The complexity threshold must be in [0, 1), got {threshold}.")
    magnitude = np.abs(np.asarray(relevance, dtype=np.float64)).sum(1)
    magnitude = magnitude.reshape(magnitude.shape[0], -1)
    top = magnitude.max(1, keepdims=True)
    above = np.where(top[:, 0] > 0, (magnitude > threshold * top).mean(1), 0.0)
    totals = magnitude.sum(1, keepdims=True)
    p = np.divide(magnitude, totals, out=np.zeros_like(magnitude), where=totals > 0)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
    return above, entropy, entropy / np.log(magnitude.shape[1]) if magnitude.shape[1] > 1 else entropy


def _random_curves(problem, steps, baseline, seed, batch_size, progress, should_cancel) -> list[DeletionCurve]:
    """Deletion curves of every class for one seeded random voxel order (one set of forward passes)."""
    ranking = np.random.default_rng(seed).permutation(int(np.prod(problem.spatial_shape)))
    fractions, scores = _removal_scores(problem, ranking, steps, baseline, batch_size, progress, should_cancel)
    return [_curve("random order", name, "random", fractions, scores[:, k]) for k, name in enumerate(problem.class_names)]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (nan when either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# --------------------------------------------------------------------------- the registered metrics


@register_metric
class Faithfulness(QualityMetric):
    """Faithfulness correlation (Bhatt et al. 2020)."""

    name = "faithfulness"
    columns = (Column("faithfulness", "Faithfulness",
                      "Pearson r between relevance summed over random voxel subsets and the output drop when they "
                      "are removed (higher is better)"),)

    def weight(self, settings: QualitySettings, n_classes: int) -> float:
        return settings.n_subsets

    def passes(self, settings: QualitySettings, n_classes: int, maps: Sequence[Passes]) -> Passes:
        # one forward pass per subset and one of the intact input, for each method's map
        return Passes(len(maps) * (settings.n_subsets + 1), maps=PERTURBED_MAPS)

    def measure(self, context: MetricContext, progress) -> dict[str, np.ndarray]:
        s = context.settings
        return {"faithfulness": faithfulness_correlation(
            context.problem, context.relevance, subset=s.subset, n_subsets=s.n_subsets, baseline=s.baseline,
            seed=s.seed, batch_size=s.batch_size, progress=progress, should_cancel=context.should_cancel)}


@register_metric
class Deletion(QualityMetric):
    """Deletion curve (Petsiuk et al. 2018): most relevant voxels removed first, against a seeded random order."""

    name = "deletion"
    columns = (
        Column("deletion_auc", "Deletion AUC",
               "area under the output curve as the most relevant voxels are removed first (lower is better)"),
        Column("deletion_auc_random", "Deletion AUC, random",
               "the same with voxels removed in random order: the reference the method should beat"),
    )

    def weight(self, settings: QualitySettings, n_classes: int) -> float:
        return (settings.deletion_steps + 1) * (n_classes + 1)

    def passes(self, settings: QualitySettings, n_classes: int, maps: Sequence[Passes]) -> Passes:
        # a curve per method and class, and one random order's curve shared by every method and class
        return Passes((settings.deletion_steps + 1) * (len(maps) * n_classes + 1), maps=PERTURBED_MAPS)

    def measure(self, context: MetricContext, progress) -> dict[str, np.ndarray]:
        s, problem = context.settings, context.problem
        n_classes = len(problem.class_names)
        random_curves = context.shared.get(self.name)
        total = n_classes + (1 if random_curves is None else 0)
        auc = np.full(n_classes, np.nan)
        for k in range(n_classes):
            curve = deletion_curve(problem, context.relevance[k], k, steps=s.deletion_steps, baseline=s.baseline,
                                   batch_size=s.batch_size, method=context.label, should_cancel=context.should_cancel,
                                   progress=part_of(progress, k, total))
            context.curves.append(curve)
            auc[k] = curve.auc
        if random_curves is None:   # one random order serves every method
            random_curves = _random_curves(problem, s.deletion_steps, s.baseline, s.seed, s.batch_size,
                                           part_of(progress, n_classes, total), context.should_cancel)
            context.shared[self.name] = random_curves
            context.curves.extend(random_curves)
        return {"deletion_auc": auc, "deletion_auc_random": np.array([c.auc for c in random_curves])}


@register_metric
class Sensitivity(QualityMetric):
    """Max-sensitivity (Yeh et al. 2019)."""

    name = "sensitivity"
    columns = (Column("max_sensitivity", "Max-sensitivity",
                      "largest relative change of the map under small input noise (lower is better)"),)

    def weight(self, settings: QualitySettings, n_classes: int) -> float:
        return settings.noise_samples * 4

    def passes(self, settings: QualitySettings, n_classes: int, maps: Sequence[Passes]) -> Passes:
        # every method's map computed again for every noisy input
        return repeated(maps, settings.noise_samples)

    def measure(self, context: MetricContext, progress) -> dict[str, np.ndarray]:
        s = context.settings
        return {"max_sensitivity": max_sensitivity(
            context.problem, context.method, context.relevance, n_samples=s.noise_samples, radius=s.noise_radius,
            seed=s.seed, progress=progress, should_cancel=context.should_cancel)}


@register_metric
class Complexity(QualityMetric):
    """Complexity: the share of voxels above a threshold, and the entropy of the normalised map."""

    name = "complexity"
    columns = (
        Column("above_threshold", "Complexity",
               "share of the crop's voxels above 10% of the largest |relevance| (lower: a sparser map)"),
        Column("entropy", "Entropy", "Shannon entropy (nats) of the normalised |relevance|", in_case_table=False),
        Column("entropy_normalised", "Entropy / log N", "entropy divided by log(voxels): 1 for a flat map"),
    )

    def measure(self, context: MetricContext, progress) -> dict[str, np.ndarray]:
        above, entropy, normalised = complexity(context.relevance, threshold=context.settings.threshold)
        return {"above_threshold": above, "entropy": entropy, "entropy_normalised": normalised}
