"""Supervoxels for perturbation methods: SLIC (Achanta et al. 2012) in torch for any number of dimensions and channels."""

from __future__ import annotations

import itertools
import math
from typing import Optional

import torch

from ..progress import CancelFn, ProgressFn, step


def slic(image: torch.Tensor, size: int, compactness: float = 1.0, iterations: int = 10,
         progress: Optional[ProgressFn] = None, should_cancel: Optional[CancelFn] = None) -> torch.Tensor:
    """Supervoxel labels (*spatial), numbered 0..n-1, of an image (C, *spatial), seeded on a grid of spacing ``size``.

    Distance of a voxel to a centre: squared difference of the channels (each divided by its
    standard deviation, averaged over channels) plus (compactness x distance / size)^2. Each
    voxel compares the centres seeded in its own and the neighbouring grid cells, as SLIC's
    2S search window does; centres move to the mean of their voxels. Progress is reported, and
    cancel heard, after each neighbouring cell of each iteration (3^d per iteration).
    """
    if size < 1:
        raise ValueError(f"The supervoxel size must be at least 1 voxel, got {size}.")
    spatial = tuple(image.shape[1:])
    dims = len(spatial)
    device = image.device
    features = image.detach().float().flatten(1).T                       # (N, C)
    features = features / features.std(0).clamp_min(1e-6) / math.sqrt(features.shape[1])
    axes = [torch.arange(s, device=device, dtype=torch.float32) for s in spatial]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dims)   # (N, d)
    counts = torch.tensor([math.ceil(s / size) for s in spatial], device=device)
    cell = (coords // size).long()                                       # (N, d)
    strides = torch.tensor([math.prod(counts[i + 1 :].tolist()) for i in range(dims)], device=device)
    # seeds: the centre of each grid cell (cut by the border)
    seed_cells = torch.stack(torch.meshgrid(*[torch.arange(int(c), device=device) for c in counts], indexing="ij"), -1).reshape(-1, dims)
    upper = torch.tensor(spatial, device=device, dtype=torch.float32)
    centre_pos = torch.minimum(seed_cells.float() * size + (size - 1) / 2, upper - 1)
    seed_index = (centre_pos.round().long() * torch.tensor([math.prod(spatial[i + 1 :]) for i in range(dims)], device=device)).sum(1)
    centre_feat = features[seed_index]
    weight = (compactness / size) ** 2
    labels = torch.zeros(coords.shape[0], dtype=torch.long, device=device)
    offsets = list(itertools.product((-1, 0, 1), repeat=dims))
    total = iterations * len(offsets)
    for iteration in range(iterations):
        best = torch.full((coords.shape[0],), float("inf"), device=device)
        for o, offset in enumerate(offsets):
            step(iteration * len(offsets) + o, total, progress, should_cancel)
            candidate = cell + torch.tensor(offset, device=device)
            valid = ((candidate >= 0) & (candidate < counts)).all(1)
            index = (candidate.clamp_min(0).minimum(counts - 1) * strides).sum(1)
            distance = ((features - centre_feat[index]) ** 2).sum(1) + weight * ((coords - centre_pos[index]) ** 2).sum(1)
            better = valid & (distance < best)
            best = torch.where(better, distance, best)
            labels = torch.where(better, index, labels)
        members = torch.bincount(labels, minlength=centre_pos.shape[0]).float()
        occupied = members > 0
        sums_pos = torch.zeros_like(centre_pos).index_add_(0, labels, coords)
        sums_feat = torch.zeros_like(centre_feat).index_add_(0, labels, features)
        centre_pos[occupied] = sums_pos[occupied] / members[occupied, None]
        centre_feat[occupied] = sums_feat[occupied] / members[occupied, None]
    step(total, total, progress, None)
    _, consecutive = torch.unique(labels, return_inverse=True)
    return consecutive.view(spatial)
