"""Perturbations that change nothing: input voxels that already hold the baseline value.

A cube or feature whose every voxel already equals what a perturbation would write there (the
zero background of a skull-stripped, z-scored scan under the zero baseline) leaves the input as it
is. Its occlusion drop is then exactly 0 and it is a null player of the Shapley game (its value is
exactly 0, and leaving it out changes no other feature's value), for any network, instance
normalisation included: it needs no forward pass. Occlusion and KernelSHAP skip such perturbations.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch


def changed_voxels(inputs: torch.Tensor, baseline: torch.Tensor | float, per_channel: bool) -> torch.Tensor:
    """(groups, *spatial) bool: where setting the input (1, C, *spatial) to ``baseline`` changes it.

    Per channel, one group per channel; else one group, changed where any channel changes.
    """
    reference = baseline[0] if isinstance(baseline, torch.Tensor) else baseline
    differs = inputs[0] != reference
    return differs if per_channel else differs.any(0, keepdim=True)


class ChangedBoxes:
    """Which boxes of a grid hold a changed voxel, from a summed-area table of :func:`changed_voxels`."""

    def __init__(self, changed: torch.Tensor) -> None:
        table = changed.cpu().numpy().astype(np.int64)
        for axis in range(1, table.ndim):
            table = np.cumsum(table, axis=axis)
        self.table = np.pad(table, [(0, 0)] + [(1, 0)] * (table.ndim - 1))   # table[g, a, b, ...]: voxels before
        self.spatial = tuple(int(s) for s in changed.shape[1:])

    def counts(self, starts: Sequence[Sequence[int]], stops: Sequence[Sequence[int]]) -> np.ndarray:
        """Changed voxels (groups, n_1, ..., n_d) in each box of the grid whose per-axis extents are [start, stop)."""
        starts = [np.asarray(s, dtype=np.int64) for s in starts]
        stops = [np.asarray(s, dtype=np.int64) for s in stops]
        dims = len(starts)
        total = 0
        for corner in itertools.product((0, 1), repeat=dims):   # inclusion-exclusion over the box's corners
            index = np.ix_(*[stops[a] if c else starts[a] for a, c in enumerate(corner)])
            total = total + (-1) ** (dims - sum(corner)) * self.table[(slice(None),) + index]
        return total

    def changing(self, starts: Sequence[Sequence[int]], stops: Sequence[Sequence[int]]) -> np.ndarray:
        """(groups, n_1, ..., n_d) bool: whether perturbing each box of the grid changes the input."""
        return self.counts(starts, stops) > 0


def moved_features(features: torch.Tensor, changed: torch.Tensor, m: int) -> torch.Tensor:
    """(m,) bool: whether each feature of the index ``features`` (groups, *spatial) holds a changed voxel."""
    hits = torch.bincount(features.flatten(), weights=changed.flatten().to(torch.float64), minlength=m)
    return hits > 0
