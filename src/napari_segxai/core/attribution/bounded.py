"""Perturbed inputs evaluated only where they can change the output: the crop their receptive field bounds.

A perturbation of a box of the input changes the output only in the box widened by the
receptive-field radius (:mod:`.receptive_field`), its *zone*. Its drop of each target scalar is
then the sum over the zone of the unperturbed minus the perturbed voxel terms of the target,
both computed on a crop that widens the zone by the radius again (every zone output sees all
its input), aligned to the network's downsampling factor. The unperturbed crop is run once per
crop position and kept while perturbations on it are evaluated; perturbations whose crops have
one shape run together in one batch. Exact for a network of local operations; with instance or
group normalisation held at the unperturbed input's statistics, exact up to the perturbation's
own effect on them (docs/attribution.md gives the measured difference).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .. import progress as _progress
from .batching import samples_per_batch
from .receptive_field import Reach, crop_for

#: Bounded evaluation is used when its crops (perturbed and unperturbed) add up to at most this share of the whole input's passes.
LARGEST_CROP_SHARE = 0.5


@dataclass(frozen=True)
class Plan:
    """The work of perturbations of boxes evaluated bounded: crop share per perturbation, crop positions."""

    share: float            # mean voxels of a perturbation's crop over the input's (1.0: the whole input)
    crops: int              # distinct crop positions (one unperturbed pass each)
    crops_share: float      # the distinct crops' voxels over the input's, summed
    reason: str = ""        # why the whole input is evaluated instead ("" when bounded)
    tile: tuple[int, ...] = ()     # boxes starting in one tile share a crop (crop_for)
    extent: tuple[int, ...] = ()   # the largest box side per axis

    @property
    def bounded(self) -> bool:
        return not self.reason

    def forward_passes(self, perturbations: int) -> float:
        """Input-sized forward passes the perturbations cost (a crop's pass counts its share of the voxels)."""
        return perturbations if not self.bounded else perturbations * self.share + self.crops_share


def refusal(reach: Reach | None, held: bool = False) -> str:
    """Why a perturbation method must evaluate the whole input with this ``reach`` ("" when crops are exact enough).

    A network whose normalisation statistics must be held (``reach.held``) is bounded only with ``held``.
    """
    if reach is None:
        return "bounded evaluation is off"
    if not reach.bounded:
        return f"the receptive field is not bounded: {reach.reason}"
    if reach.held and not held:
        return ("the network normalises with statistics of the whole volume (instance or group "
                "norm); holding them is approximate (hold_statistics=True allows it)")
    return ""


def plan(spatial: Sequence[int], boxes_per_axis: Sequence[Sequence[slice]], reach: Reach | None,
         copies: int = 1, held: bool = False) -> Plan:
    """The plan for perturbing every box of the grid ``boxes_per_axis`` (per axis, the box's extent on it) ``copies`` times.

    The reach decides first (:func:`refusal`). The tile (boxes sharing a crop) is the power of two that makes the fewest input-sized passes:
    larger tiles make fewer unperturbed crops but larger perturbed ones.
    """
    reason = refusal(reach, held)
    if reason:
        return Plan(1.0, 1, 1.0, reason)
    extent = tuple(max(b.stop - b.start for b in boxes) for boxes in boxes_per_axis)
    n = copies * math.prod(len(boxes) for boxes in boxes_per_axis)
    best = None
    for tile in (2 ** k for k in range(max(spatial).bit_length() + 1)):
        share, crops, crops_share = 1.0, 1, 1.0
        for axis, (side, boxes) in enumerate(zip(spatial, boxes_per_axis)):
            one = Reach((reach.radius[axis],), (reach.factor[axis],))
            extents = [crop_for((box,), one, (side,), (tile,), (extent[axis],))[0][0] for box in boxes]
            distinct = {(e.start, e.stop) for e in extents}
            share *= sum(e.stop - e.start for e in extents) / len(extents) / side
            crops *= len(distinct)
            crops_share *= sum(b - a for a, b in distinct) / side
        candidate = Plan(share, crops, crops_share, "", (tile,) * len(spatial), extent)
        if best is None or candidate.forward_passes(n) < best.forward_passes(n):
            best = candidate
        if tile >= max(spatial):
            break
    if best.forward_passes(n) > LARGEST_CROP_SHARE * n:
        return Plan(1.0, 1, 1.0, f"the crops the perturbations can change add up to {best.forward_passes(n) / n:.0%} "
                                 f"of the whole input's passes, not much less")
    return best


def bounded_drops(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    target,
    boxes: Sequence[tuple[slice, ...]],
    perturb: Callable[[torch.Tensor, Sequence[int], Sequence[tuple[slice, ...]]], None],
    reach: Reach,
    work: Plan,
    largest_batch: int,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
    fixed_batches: bool = False,
) -> torch.Tensor:
    """Drops (n, K_t) of the target scalars when each of ``n`` perturbations is applied, evaluated on crops.

    Perturbation ``i`` changes ``boxes[i]`` (spatial slices of ``inputs`` (1, C, *spatial));
    ``perturb(copies, ids, crops)`` writes perturbations ``ids`` into ``copies`` (b, C, *crop), copies of
    the input's ``crops``. Call inside :func:`.receptive_field.held_normalisation` when ``reach.held``.
    Batches hold at most ``largest_batch`` passes (perturbed and unperturbed crops together), sized to
    about PACE_SECONDS each, or ``largest_batch`` perturbed crops each with ``fixed_batches``.
    """
    spatial = tuple(inputs.shape[2:])
    n = len(boxes)
    places = [crop_for(box, reach, spatial, work.tile, work.extent) for box in boxes]
    key = [tuple((c.start, c.stop) for c in crop) for crop, _ in places]
    order = sorted(range(n), key=lambda i: (tuple(b - a for a, b in key[i]), key[i]))
    drops = inputs.new_zeros((n, len(target.classes)))
    if fixed_batches:  # the user's batch size: perturbed crops per pass (the unperturbed ones come on top)
        batch_slices = (slice(s, min(s + largest_batch, n)) for s in range(0, n, largest_batch))
    else:  # room for one unperturbed crop per perturbed one under the memory cap
        batch_slices = _progress.paced(n, max(1, largest_batch // 2), progress, should_cancel)
    kept: dict[tuple, torch.Tensor] = {}
    with torch.no_grad():
        for part in batch_slices:
            _progress.step(part.start, n, progress, should_cancel)
            ids = order[part]
            for _, same in itertools.groupby(ids, key=lambda i: tuple(b - a for a, b in key[i])):
                same = list(same)
                crops = [places[i][0] for i in same]
                missing = list(dict.fromkeys(key[i] for i in same if key[i] not in kept))
                stack = torch.cat([inputs[(slice(None), slice(None)) + places[i][0]] for i in same]
                                  + [inputs[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in k)] for k in missing])
                perturb(stack[: len(same)], same, crops)
                output = network(stack)
                for j, k in enumerate(missing):
                    kept[k] = target.voxel_terms(output[len(same) + j : len(same) + j + 1], tuple(slice(a, b) for a, b in k))
                for j, i in enumerate(same):
                    crop, zone = places[i]
                    inside = tuple(slice(z.start - c.start, z.stop - c.start) for z, c in zip(zone, crop))
                    perturbed = target.voxel_terms(output[j : j + 1], crop)
                    where = (slice(None), slice(None)) + inside
                    drops[i] = (kept[key[i]][where] - perturbed[where]).flatten(2).sum(-1)[0]
            kept = {key[ids[-1]]: kept[key[ids[-1]]]}   # later batches start on the last crop or a new one
    _progress.step(n, n, progress, None)
    return drops


def crop_batch(network: torch.nn.Module, inputs: torch.Tensor, reach: Reach, work: Plan, box: tuple[slice, ...],
               n: int, requested: int) -> int:
    """Perturbed crops per batch: ``requested``, else what fits the memory cap for the crop of ``box``."""
    crop, _ = crop_for(box, reach, tuple(inputs.shape[2:]), work.tile, work.extent)
    return samples_per_batch(network, inputs[(slice(None), slice(None)) + crop], 2 * n, requested,
                             with_gradients=False)
