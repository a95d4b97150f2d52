"""Where an explanation runs on the model's grid: the card's window, its weights, and the crop around a target region."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map

from .targets import Target


def _roi(card, image: torch.Tensor) -> tuple[int, ...]:
    """The window of the card on the 3D grid (a slice-wise card's window spans the whole slice axis)."""
    roi = list(card.roi_size)
    if card.spatial_dims == 2:
        roi.insert(card.slice_axis, int(image.shape[2 + card.slice_axis]))
    return tuple(int(r) for r in roi)


def _importance(card, image: torch.Tensor):
    """The window weights: MONAI's for 3D cards; for slice-wise cards the 2D map repeated along the slice axis."""
    if card.spatial_dims == 3:
        return None
    plane = compute_importance_map(tuple(card.roi_size), mode=card.mode, device="cpu").float()
    return plane.unsqueeze(card.slice_axis).expand(_roi(card, image)).contiguous()


def _granule(size: int) -> int:
    """The largest power of two (at most 32) dividing a window side: crops of its multiples suit the network."""
    granule = 1
    while size % (granule * 2) == 0 and granule < 32:
        granule *= 2
    return granule


def crop_box(region: np.ndarray, window: Sequence[int], margin: int | None, fixed_axis: int | None = None):
    """Source slices, slices inside the crop, and crop sizes around a region on the model's grid.

    Each side: the region's extent, ``margin`` voxels wider on each side (default half the
    window), at least one window, rounded up to a multiple of the window's power-of-two factor so
    strided networks accept it; centred on the region, zero-padded where it leaves the grid.
    Along ``fixed_axis`` (a slice-wise network's slice axis) just the region's extent.
    """
    spatial = region.shape
    present = np.nonzero(region)
    starts, sizes = [], []
    for axis, (points, w, s) in enumerate(zip(present, window, spatial)):
        lo, hi = int(points.min()), int(points.max()) + 1
        if axis == fixed_axis:
            starts.append(lo)
            sizes.append(hi - lo)
            continue
        m = int(w) // 2 if margin is None else int(margin)
        granule = _granule(int(w))
        size = math.ceil(max(int(w), hi - lo + 2 * m) / granule) * granule
        begin = (lo + hi) // 2 - size // 2
        begin = min(max(begin, 0), s - size) if size <= s else -((size - s) // 2)
        starts.append(begin)
        sizes.append(size)
    source = tuple(slice(max(b, 0), min(b + n, s)) for b, n, s in zip(starts, sizes, spatial))
    inside = tuple(slice(src.start - b, src.stop - b) for src, b in zip(source, starts))
    return source, inside, tuple(sizes)


def target_crop(image: torch.Tensor, goal: Target, card, margin: int | None):
    """The crop of ``image`` around ``goal``'s region (zero-padded), the target on it, and crop_box's two slices."""
    fixed_axis = card.slice_axis if card.spatial_dims == 2 else None
    source, inside, sizes = crop_box(goal.masks.any(0), _roi(card, image), margin, fixed_axis)
    crop = image.new_zeros(image.shape[:2] + tuple(sizes))
    crop[(slice(None), slice(None)) + inside] = image[(slice(None), slice(None)) + source]
    masks = np.zeros((len(goal.classes),) + tuple(sizes), dtype=bool)
    masks[(slice(None),) + inside] = goal.masks[(slice(None),) + source]
    local = Target(goal.kind, goal.classes, masks, goal.threshold, goal.output, goal.activation)
    return crop, local, source, inside
