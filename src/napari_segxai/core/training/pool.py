"""The training data pool: cases kept compactly, random crops, flips and intensity augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class PoolCase:
    image: np.ndarray     # (C, X, Y, Z) float16
    target: np.ndarray    # (X, Y, Z) uint8 class indices
    tumour: np.ndarray    # (N, 3) int16 voxel coordinates of tumour
    brain: np.ndarray     # (M, 3) int16 coordinates of a subsample of brain voxels


def compact(channels: np.ndarray, label: np.ndarray, label_to_index: dict[int, int]) -> PoolCase:
    """A case (channels on the network grid, label values) stored compactly for crop sampling."""
    lookup = np.zeros(max(max(label_to_index), int(label.max(initial=0))) + 1, np.uint8)
    for value, index in label_to_index.items():
        lookup[value] = index
    target = lookup[label]
    brain = np.argwhere(np.any(channels != 0, axis=0))[::5].astype(np.int16)
    if not len(brain):  # an image without a zero background: sample anywhere
        brain = np.argwhere(np.ones(label.shape, bool))[::5].astype(np.int16)
    tumour = np.argwhere(target > 0).astype(np.int16)
    return PoolCase(channels.astype(np.float16), target, tumour, brain)


def pick_case(pool_size: int, dataset_cases: int, dataset_fraction: float | None, rng: np.random.Generator) -> int:
    """Index of the pool case the next crop comes from.

    The pool holds a dataset's ``dataset_cases`` cases first, then generated ones. With a
    ``dataset_fraction``, that share of the crops comes from the dataset's cases and the rest from
    the generated ones; without one (or while the pool holds only one kind) every case is equally likely.
    """
    in_dataset = min(dataset_cases, pool_size)
    if dataset_fraction is None or in_dataset == 0 or in_dataset == pool_size:
        return int(rng.integers(pool_size))
    if rng.random() < dataset_fraction:
        return int(rng.integers(in_dataset))
    return int(in_dataset + rng.integers(pool_size - in_dataset))


def random_crop(case: PoolCase, config: dict, rng: np.random.Generator, near_tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    """One training crop (C, *size) float32 and its class indices (*size), 3D or a 2D slice."""
    size = list(config["crop"]["size"])
    points = case.tumour if (near_tumour and len(case.tumour)) else case.brain
    centre = points[rng.integers(len(points))].astype(int)
    image, target = case.image, case.target
    if config["spatial_dims"] == 2:
        axis = int(config["slice_axis"])
        image = np.take(image, centre[axis], axis=axis + 1)
        target = np.take(target, centre[axis], axis=axis)
        centre = np.delete(centre, axis)
    reach = min(int(size[0] * config["crop"]["offset"]), (size[0] - 1) // 2)   # the drawn voxel stays in the crop
    centre = centre + rng.integers(-reach, reach + 1, len(centre))
    spatial = target.shape
    starts = [int(np.clip(c - s // 2, 0, max(n - s, 0))) for c, s, n in zip(centre, size, spatial)]
    box = tuple(slice(a, a + s) for a, s in zip(starts, size))
    img = image[(slice(None),) + box].astype(np.float32)
    tgt = target[box]
    pad = [(0, s - n) for s, n in zip(size, tgt.shape)]
    if any(p[1] for p in pad):
        img = np.pad(img, [(0, 0)] + pad)
        tgt = np.pad(tgt, pad)
    return img, tgt


def augment(image: torch.Tensor, rng: np.random.Generator, settings: dict) -> torch.Tensor:
    """Intensity and contrast randomisation of one (C, *spatial) crop; voxels outside the brain stay zero."""
    brain = (image != 0).any(dim=0, keepdim=True)
    out = image.clone()
    for c in range(out.shape[0]):
        if rng.random() > settings["channel_probability"]:
            continue
        x = out[c]
        inside = brain[0]
        if not inside.any():
            continue
        if rng.random() < settings["gamma_probability"]:
            lo, hi = x[inside].min(), x[inside].max()
            span = torch.clamp(hi - lo, min=1e-6)
            gamma = float(np.exp(rng.uniform(np.log(settings["gamma"][0]), np.log(settings["gamma"][1]))))
            x = lo + span * ((x - lo) / span).clamp(0, 1) ** gamma
        x = x * float(rng.uniform(*settings["scale"])) + float(rng.uniform(*settings["shift"]))
        noise = float(rng.uniform(*settings["noise_sd"]))
        if noise:
            x = x + noise * torch.randn_like(x)
        out[c] = x
    out = out * brain
    return out


def remove_enhancement(image: np.ndarray, target: np.ndarray, *, contrast: int, plain: int, enhancing: int,
                       into: int) -> tuple[np.ndarray, np.ndarray]:
    """The crop as if its tumour had taken up no contrast agent: a non-enhancing core made from a real one.

    Where the target is ``enhancing``, the post-contrast channel takes the pre-contrast channel's
    values (blended over about a voxel at the edge, as partial volume would), and those voxels
    become class ``into`` (the non-enhancing core). Without uptake a T1 after contrast shows what
    the T1 before it shows, and both are z-scored in the brain, so the plain channel's values stand
    in for the missing enhancement: TCGA-DU-7294's non-enhancing core lies 0.97 SD under normal
    brain on T1 and 1.09 SD under it on T1ce. Tumour core and whole tumour keep their extent.
    """
    from scipy import ndimage

    inside = target == enhancing
    weight = np.clip(ndimage.gaussian_filter(inside.astype(np.float32), 1.0) + inside, 0, 1)
    image = image.copy()   # outside the brain both channels are 0, and so stays the blend
    image[contrast] = image[contrast] * (1 - weight) + image[plain] * weight
    target = np.where(inside, into, target).astype(target.dtype)
    return image, target


def flip(image: torch.Tensor, target: torch.Tensor, rng: np.random.Generator, axes: Sequence[int], dims: int, slice_axis):
    """Random flips of a crop and its target along the given (volume) axes."""
    for axis in axes:
        if dims == 2:
            if axis == slice_axis:
                continue
            axis = axis - (1 if slice_axis is not None and axis > slice_axis else 0)
        if rng.random() < 0.5:
            image = torch.flip(image, dims=[axis + 1])
            target = torch.flip(target, dims=[axis])
    return image, target
