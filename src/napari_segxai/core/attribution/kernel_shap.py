"""Kernel SHAP over cubes or supervoxels: Lundberg and Lee 2017, arXiv:1705.07874; bounded by the receptive field."""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import progress as _progress
from ..memory import HeapCeiling, available_memory, gigabytes
from .base import AttributionMethod, Parameter, register
from .baselines import BASELINES
from .batching import MEMORY_FRACTION, activation_bytes, fitting_batch
from .bounded import refusal
from .cost import TIME_BUDGET_S, Passes
from .receptive_field import BoundedByReach, Reach, crop_for, held_normalisation
from .supervoxels import slic
from .unchanged import changed_voxels, moved_features


def cube_features(spatial: tuple[int, ...], side: int, groups: int, device=None) -> torch.Tensor:
    """Feature index (groups, *spatial): non-overlapping cubes of ``side`` tiling the grid, numbered per group."""
    counts = [math.ceil(s / side) for s in spatial]
    grids = torch.meshgrid(*[torch.arange(s, device=device) // side for s in spatial], indexing="ij")
    index = torch.zeros(spatial, dtype=torch.long, device=device)
    for grid, count in zip(grids, counts):
        index = index * count + grid
    n_cubes = math.prod(counts)
    return torch.stack([index + g * n_cubes for g in range(groups)])


def supervoxel_features(inputs: torch.Tensor, size: int, groups: int, compactness: float, progress=None,
                        should_cancel=None) -> torch.Tensor:
    """Feature index (groups, *spatial): SLIC supervoxels of the input (all channels), numbered per group."""
    labels = slic(inputs[0], size, compactness, progress=progress, should_cancel=should_cancel)
    n = int(labels.max()) + 1
    return torch.stack([labels + g * n for g in range(groups)])


def shapley_kernel(m: int, size: torch.Tensor) -> torch.Tensor:
    """Kernel SHAP weight of a coalition of ``size`` features out of ``m``."""
    binomial = torch.exp(torch.lgamma(torch.tensor(m + 1.0)) - torch.lgamma(size + 1.0) - torch.lgamma(m - size + 1.0))
    return (m - 1) / (binomial * size * (m - size))


def coalitions(m: int, n_samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions (n, m) of kept features and their regression weights (the Shapley kernel).

    As in the ``shap`` library: coalition sizes whose subsets (with their complements) all fit
    in the budget, smallest first, are enumerated with their exact kernel weights; the rest of
    the budget draws sizes in proportion to their remaining kernel mass and members at random,
    each drawn coalition paired with its complement, sharing that mass equally. When all
    2^m - 2 coalitions fit, the result is the exact Shapley value.
    """
    if 2**m - 2 <= n_samples:
        rows = torch.tensor(list(itertools.product((0.0, 1.0), repeat=m)), dtype=torch.float64)[1:-1]
        return rows, shapley_kernel(m, rows.sum(1))
    mass = {size: (m - 1) / (size * (m - size)) for size in range(1, m)}  # kernel weight of all coalitions of a size
    remaining = set(mass)
    rows, weights = [], []
    budget = n_samples
    for size in range(1, m // 2 + 1):
        pair = {size, m - size}
        count = sum(math.comb(m, t) for t in pair)
        share = budget * sum(mass[t] for t in pair) / sum(mass[t] for t in remaining)
        if share < count:
            break
        for t in pair:
            for members in itertools.combinations(range(m), t):
                row = torch.zeros(m, dtype=torch.float64)
                row[list(members)] = 1.0
                rows.append(row)
                weights.append(mass[t] / math.comb(m, t))
        budget -= count
        remaining -= pair
    enumerated = (torch.stack(rows), torch.tensor(weights, dtype=torch.float64)) if rows else None
    if not remaining or budget < 2:
        return enumerated
    sizes = torch.tensor(sorted(remaining), dtype=torch.float64)
    probability = torch.tensor([mass[int(t)] for t in sizes], dtype=torch.float64)
    half = budget // 2
    drawn = sizes[torch.multinomial(probability, half, replacement=True, generator=generator)]
    order = torch.rand(half, m, generator=generator).argsort(1).argsort(1)
    sampled = (order < drawn.unsqueeze(1)).double()
    sampled = torch.cat([sampled, 1 - sampled])
    sampled_weights = torch.full((sampled.shape[0],), float(probability.sum()) / sampled.shape[0], dtype=torch.float64)
    if enumerated is None:
        return sampled, sampled_weights
    return torch.cat([enumerated[0], sampled]), torch.cat([enumerated[1], sampled_weights])


#: The finest automatic cube side: finer features are one parameter away (cube=4), with their cost shown first.
SMALLEST_AUTO_CUBE = 8
#: Bytes per (sample, feature) entry: the float64 coalition matrix, the design, its weighted copy and
#: lstsq's work copy, and the sampler's random keys and two argsorts.
REGRESSION_BYTES_PER_ENTRY = 4 * 8 + 3 * 8


#: Input-sized tensors per masked copy of a batch while it is built: its mask and the masked input.
MASKED_MAPS = 2


def default_samples(m: int) -> int:
    """Samples when n_samples is 0: four per feature, at least 64."""
    return max(64, 4 * m)


def regression_bytes(n: int, m: int) -> int:
    """Working memory of ``n`` coalitions of ``m`` features: their matrix, the sampler and the regression."""
    return REGRESSION_BYTES_PER_ENTRY * n * m


#: The share of the progress bar SLIC's iterations take when the features are supervoxels.
SLIC_SHARE = 0.1


@dataclass(frozen=True)
class Support:
    """Where KernelSHAP's coalitions run and which inputs can change the target: the target's reach, or the whole input."""

    crop: tuple[slice, ...]     # every coalition is evaluated on this crop of the input
    zone: tuple[slice, ...]     # input voxels that can change the target: features wholly outside it get 0 unsampled
    reason: str = ""            # why the whole input and every feature ("" when bounded)

    @property
    def bounded(self) -> bool:
        return not self.reason

    def share(self, spatial) -> float:
        """The crop's voxels over the input's."""
        return math.prod((c.stop - c.start) / s for c, s in zip(self.crop, spatial))

    def describe(self, active: int, total: int, spatial) -> str:
        """One line for the user: the features sampled and the crop, or why the whole input."""
        if not self.bounded:
            return f"all {total:,} features sampled on the whole input ({self.reason})"
        crop = " x ".join(str(c.stop - c.start) for c in self.crop)
        return (f"{active:,} of {total:,} features can reach the target and are sampled (the other {total - active:,} "
                f"are 0 without sampling); coalitions run on a {crop} crop ({self.share(spatial):.1%} of the input)")


def support(spatial, target, reach: Reach | None, held: bool = False) -> Support:
    """The crop and zone of ``target`` (its regions' bounding box widened by the reach, :func:`.crop_for`), or why none."""
    whole = tuple(slice(0, s) for s in spatial)
    reason = refusal(reach, held)
    if reason:
        return Support(whole, whole, reason)
    region = np.asarray(target.masks).any(0)
    present = [np.flatnonzero(region.any(axis=tuple(a for a in range(region.ndim) if a != axis)))
               for axis in range(region.ndim)]
    box = tuple(slice(int(p.min()), int(p.max()) + 1) for p in present)
    crop, zone = crop_for(box, reach, tuple(spatial))
    return Support(crop, zone)


def cubes_in(zone: tuple[slice, ...], side: int) -> int:
    """Cubes of ``side`` (tiling the grid from 0) that meet ``zone``."""
    return math.prod((z.stop - 1) // side - z.start // side + 1 for z in zone)


@register("kernel_shap")
class KernelSHAP(BoundedByReach, AttributionMethod):
    """Shapley values of cubes or supervoxels (per channel) from a weighted regression on masked inputs, all classes at once.

    Each feature's value is spread evenly over its voxels, so a class's map sums to
    S(x) - S(baseline) exactly (the efficiency constraint is imposed in the regression).
    Bounded (the default), features the target's receptive field cannot reach are null players:
    they get 0 without being sampled, and every masked input runs only on the crop around the target.
    """

    signed = True
    uses_baseline = True
    parameters = {
        "features": Parameter("cubes", "the features: a grid of cubes, or SLIC supervoxels of the input",
                              choices=("cubes", "supervoxels")),
        "cube": Parameter(0, "side of the cubes, or spacing of the supervoxel seeds, in voxels; 0: the smallest "
                          f"(at least {SMALLEST_AUTO_CUBE}) whose samples fit about {TIME_BUDGET_S:.0f} s on this device",
                          minimum=0, auto=True),
        "compactness": Parameter(1.0, "supervoxels: weight of distance against intensity", minimum=0.0),
        "per_channel": Parameter(True, "one feature per cube and input channel (one map per channel)"),
        "n_samples": Parameter(0, "masked inputs evaluated (all coalitions when 2^features - 2 fit); "
                               "0: four per feature that can reach the target, at least 64", minimum=0, auto=True),
        "baseline": Parameter("zeros", "values of removed features", choices=BASELINES),
        "blur_sigma": Parameter(5.0, "Gaussian sigma in voxels of the blurred baseline", minimum=0.0),
        "batch_size": Parameter(0, "masked inputs per forward pass; 0 chooses from free memory", minimum=0),
        "seed": Parameter(0, "seed of the coalition sampling", minimum=0),
        "bounded": Parameter(True, "sample only the features the target's receptive field reaches (the others are "
                             "0) and run the masked inputs on the crop around the target; the whole input and "
                             "every feature where the network cannot be bounded"),
        "reach_tolerance": Parameter(0.01, "bounded: gradients below this share of the peak are left out when the "
                                     "receptive field is measured; 0: its whole support (exact without instance norm)",
                                     minimum=0.0, maximum=0.5),
        "hold_statistics": Parameter(False, "bounded on a network with instance or group normalisation, its "
                                     "statistics held at the whole input's (approximate: masked inputs change them)"),
    }

    auto_parameters = ("cube", "n_samples")

    @property
    def channel_resolved(self) -> bool:
        return self.params["per_channel"]

    def replacement(self, inputs: torch.Tensor) -> torch.Tensor:
        """What a removed feature holds: the baseline."""
        return self.baseline_of(inputs)

    def n_features(self, shape: tuple[int, ...], side: int, zone: tuple[slice, ...] | None = None) -> int:
        """Features of an input (C, *spatial) cut in cubes of ``side`` (about as many supervoxels), those meeting ``zone``.

        Once prepared on the input, cubes that already hold the baseline (null players) are left out.
        """
        spatial = tuple(shape[1:])
        zone = zone or tuple(slice(0, s) for s in spatial)
        starts = [list(range(z.start // side * side, z.stop, side)) for z in zone]
        changing = self.changed_boxes(spatial, starts, [[min(a + side, s) for a in axis]
                                                        for axis, s in zip(starts, spatial)])
        if changing is not None:
            return int(changing.sum())
        groups = shape[0] if self.params["per_channel"] else 1
        return groups * cubes_in(zone, side)

    def support(self, shape: tuple[int, ...], target) -> Support:
        """Where the coalitions of an input (C, *spatial) run for ``target``: its crop and zone, or the whole input and why."""
        reach = self._reach if self.params["bounded"] and target is not None else None
        return support(shape[1:], target, reach, self.params["hold_statistics"])

    def settle(self, speed, target) -> "KernelSHAP":
        """Cubes: the smallest from SMALLEST_AUTO_CUBE up whose samples fit the time budget; samples: four per feature."""
        side, n_samples = self.params["cube"], self.params["n_samples"]
        where = self.support(speed.shape, target)
        if side == 0:
            crop_seconds = speed.forward_seconds * where.share(speed.shape[1:])
            affordable = TIME_BUDGET_S / max(crop_seconds, 1e-9) - 2
            largest = max(speed.shape[1:])
            fits = ((lambda m: default_samples(m) <= affordable) if n_samples == 0 else (lambda m: m < n_samples))
            side = next((c for c in range(min(SMALLEST_AUTO_CUBE, largest), largest + 1)
                         if fits(self.n_features(speed.shape, c, where.zone))), largest)
        n_samples = n_samples or default_samples(self.n_features(speed.shape, side, where.zone))
        return self.replaced(cube=side, n_samples=n_samples)

    def passes(self, shape, target) -> Passes:
        """Measuring the reach, then the input and the baseline and one pass per sampled coalition, each its crop's share.

        Besides the regression, the working memory holds the feature index (int64, 2 input-sized
        maps per channel group) and input - baseline; each masked copy of a batch holds its mask
        and itself while it is built (MASKED_MAPS).
        """
        where = self.support(shape, target)
        m = self.n_features(shape, self.params["cube"], where.zone)
        n = self.params["n_samples"] or default_samples(m)
        sample = 4 * math.prod(shape)
        fixed = 2 * sample * (1 if self.params["per_channel"] else 1 / shape[0]) + sample
        return Passes(self.reach_passes + math.ceil((2 + n) * where.share(shape[1:])), batch=self.params["batch_size"],
                      maps=MASKED_MAPS, extra_bytes=regression_bytes(n, m) + int(fixed))

    def _check_memory(self, n: int, m: int, device) -> None:
        """Refuse, before any pass, a coalition matrix and regression that would not fit in the memory free now."""
        budget = available_memory(device) * MEMORY_FRACTION
        needed = regression_bytes(n, m)
        if needed > budget:
            largest = int(budget // (REGRESSION_BYTES_PER_ENTRY * m))
            advice = (f"the most samples that fit is {largest:,}" if largest > m else
                      f"no sample count above {m:,} features fits: enlarge the cubes")
            raise ValueError(f"kernel_shap: {n:,} samples of {m:,} features need about {gigabytes(needed)} for the "
                             f"coalitions and the regression, more than the {gigabytes(budget)} it may use now; "
                             f"{advice} (n_samples), or raise cube above {self.params['cube']}.")

    def features_of(self, inputs: torch.Tensor, progress=None, should_cancel=None) -> torch.Tensor:
        """Feature index (groups, *spatial) of ``inputs`` (1, C, *spatial): cubes or supervoxels, per channel or shared."""
        groups = inputs.shape[1] if self.params["per_channel"] else 1
        if self.params["features"] == "supervoxels":
            return supervoxel_features(inputs, self.params["cube"], groups, self.params["compactness"], progress,
                                       should_cancel)
        return cube_features(tuple(inputs.shape[2:]), self.params["cube"], groups, inputs.device)

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        if self.params["features"] == "supervoxels":   # SLIC first, on its share of the bar
            features = self.features_of(inputs, _progress.span(progress, 0.0, SLIC_SHARE), should_cancel)
            progress = _progress.span(progress, SLIC_SHARE, 1.0)
        else:
            features = self.features_of(inputs)
        m = int(features.max()) + 1
        method = self.ready(network, inputs)
        where = method.support(tuple(inputs.shape[1:]), target)
        active = torch.unique(features[(slice(None),) + where.zone]) if where.bounded else torch.arange(m)
        # a feature that already holds the baseline is a null player: exactly 0, never sampled
        baseline = self.baseline_of(inputs)
        changed = changed_voxels(inputs, baseline, self.params["per_channel"])
        active = active[moved_features(features, changed, m)[active]]
        n_active = len(active)
        n_samples = self.params["n_samples"] or default_samples(n_active)
        if 2**min(n_active, 62) - 2 > n_samples:
            self._check_memory(n_samples, n_active, inputs.device)
        crop = (slice(None), slice(None)) + where.crop
        # each voxel's column of a coalition: n_active (always kept) for features not sampled
        lookup = torch.full((m,), n_active, dtype=torch.long, device=features.device)
        lookup[active] = torch.arange(n_active, device=features.device)
        columns = lookup[features[(slice(None),) + where.crop]]                         # (groups, *crop)
        if where.bounded:
            def score(output):
                return target.voxel_terms(output, where.crop).flatten(2).sum(-1)
        else:
            score = target.scalars
        held = where.bounded and method._reach.held
        with held_normalisation(network, inputs) if held else contextlib.nullcontext():
            with torch.no_grad():
                ends = score(network(torch.cat([baseline[crop], inputs[crop]])))
            empty, difference = ends[0].double(), (ends[1] - ends[0]).double()
            if n_active == 0:
                found = difference.new_zeros((difference.shape[0], 0))
            elif n_active == 1:
                found = difference.unsqueeze(1)
            else:
                generator = torch.Generator().manual_seed(self.params["seed"])
                rows, weights = coalitions(n_active, n_samples, generator)
                if rows.shape[0] <= n_active and rows.shape[0] < 2**n_active - 2:   # all coalitions: exact
                    raise ValueError(
                        f"kernel_shap: {rows.shape[0]} samples cannot fit {n_active} features that reach the "
                        f"target; raise n_samples above {n_active} or enlarge the cubes."
                    )
                outputs = self._evaluate(network, inputs[crop], baseline[crop], columns, rows, score, progress,
                                         should_cancel)
                found = _constrained_regression(rows, weights, outputs.double() - empty, difference)
        values = found.new_zeros((found.shape[0], m))
        values[:, active.to(found.device)] = found
        sizes = torch.bincount(features.flatten(), minlength=m).double()
        density = (values / sizes).to(inputs.dtype)            # (K_t, m)
        return density[:, features]                            # (K_t, groups, *spatial)

    def _evaluate(self, network, inputs, baseline, columns, rows, score, progress, should_cancel):
        """Scores (n, K_t) of ``inputs`` with the features of each coalition kept (voxels of column n_active always), the rest at baseline."""
        n = rows.shape[0]
        # what a batch's pass holds may stay with the allocator for the next; more is given back
        if self.params["batch_size"]:
            batch = min(self.params["batch_size"], n)
            batch_slices = (slice(s, min(s + batch, n)) for s in range(0, n, batch))
            heap = HeapCeiling()   # equal batches: what the first left
        else:  # batches sized to about PACE_SECONDS each: the bar moves and Cancel is heard
            activations, sample = activation_bytes(network, inputs), inputs.numel() * inputs.element_size()
            batch = fitting_batch(activations, sample, n, with_gradients=False, maps_per_sample=MASKED_MAPS,
                                  device=inputs.device)
            batch_slices = _progress.paced(n, batch, progress, should_cancel)
            heap = HeapCeiling(batch * (activations + MASKED_MAPS * sample))
        outputs = []
        with torch.no_grad():
            delta = inputs - baseline
            for part in batch_slices:
                _progress.step(part.start, n, progress, should_cancel)
                kept = torch.nn.functional.pad(rows[part], (0, 1), value=1.0).to(device=inputs.device,
                                                                                 dtype=inputs.dtype)
                keep = inputs.new_empty((len(kept),) + tuple(columns.shape))   # (b, groups, *crop)
                for row, mask in zip(kept, keep):   # take gathers faster than kept[:, columns] on the CPU
                    torch.take(row, columns, out=mask)
                masked = torch.addcmul(baseline, keep, delta)
                del keep   # only the masked copies stay through the forward pass
                outputs.append(score(network(masked)))
                del masked   # freed before the next batch is built
                heap.check()   # else the allocator's kept blocks grow with every batch of one copy
        _progress.step(n, n, progress, None)
        return torch.cat(outputs)


def _constrained_regression(rows, weights, outputs, difference) -> torch.Tensor:
    """Weighted least squares phi (K_t, m) with sum(phi) = difference, for outputs (n, K_t) minus the empty coalition."""
    last = rows[:, -1:]
    design = rows[:, :-1] - last                                   # eliminate phi_m = difference - sum(others)
    response = outputs - last * difference.unsqueeze(0)            # (n, K_t)
    root = weights.sqrt().unsqueeze(1)
    solution = torch.linalg.lstsq(design * root, response * root).solution   # (m - 1, K_t)
    others = solution.T
    return torch.cat([others, (difference - others.sum(1)).unsqueeze(1)], dim=1)
