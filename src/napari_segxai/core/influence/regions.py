"""Per-class regions of a case (the network's confident prediction) and the crop their losses are computed on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard

#: Target value of voxels outside a region (ignored by the loss).
IGNORE = -100
#: Voxels of context kept around the regions when cropping the network input.
DEFAULT_MARGIN = 16


@dataclass(frozen=True, eq=False)
class RegionExample:
    """One case cut into per-class regions: a crop of the network input and one target map per class."""

    name: str
    seed: int
    image: torch.Tensor       # (1, C, *crop) float32 on the network grid
    targets: torch.Tensor     # (K, *crop) int64: the target class inside region k, IGNORE outside
    voxels: np.ndarray        # (K,) region sizes on the network grid
    centroids: np.ndarray     # (K, 3) region voxel nearest the region's centre, case grid (-1 when empty)
    bboxes: np.ndarray        # (K, 3, 2) (start, stop) of each region, case grid
    crop: tuple[tuple[int, int], ...]   # (start, stop) of the crop on the network grid (stop may pass the edge: zero padding)


def size_multiple(card: ModelCard) -> int:
    """What every spatial size of the network input must be a multiple of (product of strides; 32 when unknown)."""
    strides = card.kwargs.get("strides") if isinstance(card.kwargs, dict) else None
    if strides:
        total = 1
        for s in strides:
            total *= int(np.prod(s)) if isinstance(s, (list, tuple)) else int(s)
        return max(total, 1)
    return 32


def predict_regions(
    case: Case, card: ModelCard, network: torch.nn.Module, class_indices: Sequence[int], threshold: float,
    *, device: torch.device | str = "cpu", segmentation=None,
) -> tuple[torch.Tensor, object, torch.Tensor, torch.Tensor]:
    """Network input, its grid, the predicted class index per voxel, and bool regions (K, *grid) for ``class_indices``.

    A given ``segmentation`` of the case by the same card is reused (mapped to the network grid,
    nearest neighbour) instead of running the network again.
    """
    from ..model.inference import activate, infer, labels_from_probabilities
    from ..model.preprocess import preprocess

    with torch.inference_mode():
        image, grid = preprocess(case, card, device=device)
        if segmentation is None:
            logits = infer(image, card, network)
            probabilities = activate(logits[0].float(), card.activation)
            labels = labels_from_probabilities(probabilities, card)
        else:
            if tuple(segmentation.labels.shape) != tuple(case.shape) or len(segmentation.classes) != len(card.classes):
                raise ValueError(f"The segmentation given for {case.name} does not belong to this case and model; "
                                 "segment the case with this model card first.")
            probabilities = torch.as_tensor(grid.to_network_grid(segmentation.probabilities, interpolation="nearest")).to(image.device)
            labels = torch.as_tensor(grid.to_network_grid(segmentation.labels, interpolation="nearest")).to(image.device)
        index = torch.zeros(labels.shape, dtype=torch.int64, device=labels.device)
        for k, value in enumerate(card.label_values):
            index[labels == value] = k
        regions = torch.stack([(index == k) & (probabilities[k] >= threshold) for k in class_indices])
    return image.clone(), grid, index.clone(), regions.clone()


def prepare_example(
    case: Case,
    card: ModelCard,
    network: torch.nn.Module,
    class_indices: Sequence[int],
    *,
    threshold: float,
    target: str = "prediction",
    label_to_index: Optional[dict] = None,
    margin: int = DEFAULT_MARGIN,
    seed: int = -1,
    device: torch.device | str = "cpu",
    segmentation=None,
    within: Optional[np.ndarray] = None,
) -> RegionExample:
    """``case`` as a :class:`RegionExample`: regions from ``network``'s prediction, targets the prediction or the label.

    ``within`` (a boolean mask on the case's grid) keeps only the part of each region inside it.
    """
    image, grid, predicted, regions = predict_regions(case, card, network, class_indices, threshold, device=device,
                                                      segmentation=segmentation)
    if within is not None:
        if tuple(np.shape(within)) != tuple(case.shape):
            raise ValueError(f"The mask restricting the regions of {case.name} is not on its grid.")
        inside = grid.to_network_grid(np.asarray(within, np.uint8), interpolation="nearest") > 0
        regions = regions & torch.as_tensor(np.ascontiguousarray(inside), device=regions.device)
    if target == "prediction":
        index = predicted
    elif target == "label":
        if case.label is None:
            raise ValueError(f"Case {case.name} has no label volume, so its training loss cannot be computed.")
        lookup = {int(k): int(v) for k, v in (label_to_index or {c.label: i for i, c in enumerate(card.classes)}).items()}
        label_index = np.full(case.label.shape, IGNORE, np.int64)
        for value, k in lookup.items():
            label_index[case.label == value] = k
        index = torch.as_tensor(grid.to_network_grid(label_index, interpolation="nearest")).to(predicted.device)
    else:
        raise ValueError(f"Unknown loss target {target!r}; use prediction or label.")
    targets = torch.where(regions, index.unsqueeze(0), torch.full_like(index, IGNORE).unsqueeze(0))
    dims = card.spatial_dims
    skip = card.slice_axis if dims == 2 else None
    box = _crop_box(regions.any(0), size_multiple(card), margin, skip)
    image_crop = _take(image[0], box, 0.0).unsqueeze(0)
    targets_crop = _take(targets, box, IGNORE)
    voxels = regions.flatten(1).sum(1).cpu().numpy().astype(np.int64)
    centroids, bboxes = _locate(regions, grid)
    return RegionExample(case.name, int(seed), image_crop.float(), targets_crop, voxels, centroids, bboxes, box)


def _crop_box(union: torch.Tensor, multiple: int, margin: int, skip_axis: Optional[int]) -> tuple[tuple[int, int], ...]:
    """(start, stop) per axis: the regions' bounding box plus ``margin``, grown to a multiple of ``multiple``."""
    shape = tuple(union.shape)
    if not bool(union.any()):
        return tuple((0, 0) for _ in shape)
    coords = torch.nonzero(union)
    box = []
    for axis, n in enumerate(shape):
        lo, hi = int(coords[:, axis].min()), int(coords[:, axis].max()) + 1
        if axis == skip_axis:  # slices of a 2D model: just the slices the regions touch
            box.append((lo, hi))
            continue
        lo, hi = max(lo - margin, 0), min(hi + margin, n)
        length = int(math.ceil((hi - lo) / multiple) * multiple)
        if length >= n:
            box.append((0, length))
            continue
        start = min(max((lo + hi) // 2 - length // 2, 0), n - length)
        box.append((start, start + length))
    return tuple(box)


def _take(array: torch.Tensor, box, fill) -> torch.Tensor:
    """``array[..., box]``, padded with ``fill`` where the box passes the end of an axis."""
    lead = array.ndim - len(box)
    index = (slice(None),) * lead + tuple(slice(a, b) for a, b in box)
    part = array[index]
    pad = []
    for (a, b), have in zip(reversed(box), reversed(part.shape[lead:])):
        pad.extend([0, (b - a) - have])
    if any(pad):
        part = torch.nn.functional.pad(part, pad, value=fill)
    return part.contiguous()


def _locate(regions: torch.Tensor, grid) -> tuple[np.ndarray, np.ndarray]:
    """Per region, on the case grid: the voxel nearest its centre and its bounding box."""
    k = regions.shape[0]
    on_case = grid.to_case_grid(regions.to(torch.uint8), interpolation="nearest").cpu().numpy() > 0
    centroids = np.full((k, on_case.ndim - 1), -1, dtype=np.int64)
    bboxes = np.zeros((k, on_case.ndim - 1, 2), dtype=np.int64)
    for i in range(k):
        coords = np.argwhere(on_case[i])
        if not len(coords):
            continue
        mean = coords.mean(axis=0)
        centroids[i] = coords[int(np.argmin(((coords - mean) ** 2).sum(axis=1)))]
        bboxes[i, :, 0], bboxes[i, :, 1] = coords.min(axis=0), coords.max(axis=0) + 1
    return centroids, bboxes
