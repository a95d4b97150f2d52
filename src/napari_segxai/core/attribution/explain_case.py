"""Explain a segmentation of a case with a model card: relevance on the case's own grid and affine."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress as _progress
from .base import AttributionMethod, Relevance, get_method
from .case_cost import estimate_case
from .cost import Cost
from .case_grid import _granule, _importance, _roi, crop_box, target_crop  # noqa: F401 (crop_box, _granule: re-exported)
from .slicewise import SliceWise
from .targets import DEFAULT_CONFIDENCE, Target, predicted_target, region_target
from .windows import windowed_attribute

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard


def class_indices(card: "ModelCard", classes: Sequence[int | str] | int | str | None) -> tuple[int, ...]:
    """Output channels of the named (or indexed) classes; every class with a non-zero label when None."""
    if classes is None:
        chosen = tuple(i for i, c in enumerate(card.classes) if c.label != 0)
        return chosen or tuple(range(len(card.classes)))
    if isinstance(classes, (int, str)):
        classes = [classes]
    names = card.class_names
    out = []
    for c in classes:
        if isinstance(c, str) and not c.isdigit():
            if c not in names:
                raise ValueError(f"Model {card.name} has no class {c!r}; its classes are {', '.join(names)}.")
            out.append(names.index(c))
        else:
            index = int(c)
            if not 0 <= index < len(names):
                raise ValueError(f"Class index {index} is out of range for model {card.name} ({len(names)} classes).")
            out.append(index)
    return tuple(out)


def explain_case(
    case: "Case",
    card: "ModelCard",
    *,
    method: str | AttributionMethod = "saliency",
    classes: Sequence[int | str] | int | str | None = None,
    target: str = "predicted",
    region: np.ndarray | None = None,
    voxel: Sequence[float] | None = None,
    confident: bool = False,
    threshold: float = DEFAULT_CONFIDENCE,
    output_space: str = "logits",
    network: torch.nn.Module | None = None,
    device: str | torch.device | None = None,
    margin: int | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
    sequences: bool = False,
    before: Callable[[Cost], None] | None = None,
    **params: Any,
) -> Relevance:
    """Relevance maps (K_t, C, X, Y, Z) of ``case`` on its grid: preprocess as the card says, explain, map back.

    ``sequences`` also gives the result the exact Shapley value of each input sequence for each class
    and the same target (``Relevance.sequences``, from :mod:`.modality_shapley` on the model's grid:
    2^C forward passes more), which RoI importance and the report then show as "which sequence
    carries it" whatever method drew the maps.

    ``target``: ``predicted`` (the predicted region of each class, optionally only confident
    voxels), ``region`` (``region``: a boolean array on the case grid) or ``voxel`` (``voxel``:
    a voxel index of the case). Methods additive over windows explain the card's sliding-window
    model window by window; the others explain the network on one crop around the target
    region, ``margin`` voxels wider on each side (default half a window), zero outside it.

    Before the attribution starts, its cost (passes, seconds on this device from one timed pass of
    a real window or crop, working memory: :func:`.case_cost.estimate_case`) goes to ``before``,
    which may stop the work by raising :class:`~..progress.Cancelled`; the result keeps it
    (``Relevance.cost``). Automatic parameters (0) are chosen for this device then, and the result's
    parameters say what they became.
    """
    from ..model.card import build_network
    from ..model.ensemble import ensemble_members
    from ..model.device import pick_device
    from ..model.preprocess import preprocess

    if isinstance(method, str):
        method = get_method(method, **params)
    elif params:
        raise ValueError("Pass parameters either to get_method or to explain_case, not to both.")
    _check_target_kind(target)
    indices = class_indices(card, classes)
    start = time.perf_counter()
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    image, grid = preprocess(case, card, device=device)
    first, second = _split_progress(progress, target == "predicted")
    goal = case_target(case, card, image, grid, network, indices, target=target, region=region, voxel=voxel,
                       confident=confident, threshold=threshold, output_space=output_space, progress=first,
                       should_cancel=should_cancel)
    if not torch.isfinite(image).all():
        raise ValueError(f"Case {case.name} has non-finite values after preprocessing; check the images.")
    image, goal, unpad = _pad_to_windows(image, goal, card)
    # An ensemble (nnU-Net folds) is explained member by member against the ensemble's target; the maps averaged.
    members = ensemble_members(network)
    method, cost = estimate_case(method, members, image, goal, card, margin, sequences)
    if before is not None:
        before(cost)
    relevance = _members_attribute(method, members, image, goal, card, margin, second, should_cancel)
    exact = _sequence_values(method, relevance, members, image, goal, card, margin, should_cancel) if sequences else None
    relevance = grid.to_case_grid(relevance[(slice(None), slice(None)) + unpad], interpolation="linear")
    goal = _on_case_grid(goal, unpad, grid, case, card)
    _progress.step(100, 100, progress, None)
    return Relevance(
        relevance=relevance.detach().float().cpu().numpy(),
        class_indices=goal.classes,
        class_names=tuple(card.class_names[c] for c in goal.classes),
        channel_names=tuple(card.modalities) if relevance.shape[1] == len(card.modalities) else ("all channels",),
        method=method.name,
        parameters=dict(method.params),
        signed=method.signed,
        target=goal,
        seconds=time.perf_counter() - start,
        affine=np.array(case.affine, dtype=np.float64),
        sequences=exact,
        skipped=goal.skipped,
        cost=cost,
    )


def _members_attribute(method, members, image, goal, card, margin, progress, should_cancel) -> torch.Tensor:
    """The relevance of every ensemble member (one network: itself) against one target, averaged."""
    relevance = None
    for i, member in enumerate(members):
        part = _attribute(method, member, image, goal, card, margin, _member_progress(progress, i, len(members)),
                          should_cancel)
        relevance = part if relevance is None else relevance.add_(part)
    if len(members) > 1:
        relevance /= len(members)
    return relevance


def _sequence_values(method, relevance, members, image, goal, card, margin, should_cancel):
    """modality_shapley's per-sequence values for ``goal``, on the model's grid: the maps' own when they are its."""
    from .modality_shapley import ModalityShapley, values_from_maps

    if method.name != ModalityShapley.name:
        exact = ModalityShapley()
        relevance = _members_attribute(exact, members, image, goal, card, margin, None, should_cancel)
    else:
        exact = method
    names = tuple(card.class_names[c] for c in goal.classes)
    return values_from_maps(relevance, names, card.modalities, str(exact.params.get("baseline", "")))


def _attribute(method, network, image, goal, card, margin, progress, should_cancel) -> torch.Tensor:
    """The relevance of one network on the padded model-grid ``image`` for ``goal``."""
    model = network if card.spatial_dims == 3 else SliceWise(network, card.slice_axis)
    with _progress.cancel_inside(network, should_cancel):
        if method.windowable:
            return windowed_attribute(method, model, image, goal, roi_size=_roi(card, image), overlap=card.overlap,
                                      mode=card.mode, importance=_importance(card, image), progress=progress,
                                      should_cancel=should_cancel)
        return _attribute_crop(method, model, image, goal, card, margin, progress, should_cancel)


def _member_progress(progress, member: int, members: int):
    """The progress callback of ensemble member ``member`` of ``members`` (its share of the bar)."""
    if progress is None or members == 1:
        return progress
    return lambda done, total: progress(member * total + done, members * total)


TARGETS = ("predicted", "region", "voxel")


def _check_target_kind(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"Unknown target {target!r}; choose predicted, region or voxel.")


def case_target(
    case: "Case",
    card: "ModelCard",
    image: torch.Tensor,
    grid,
    network: torch.nn.Module,
    indices: Sequence[int],
    *,
    target: str = "predicted",
    region: np.ndarray | None = None,
    voxel: Sequence[float] | None = None,
    confident: bool = False,
    threshold: float = DEFAULT_CONFIDENCE,
    output_space: str = "logits",
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> Target:
    """The target on the model's grid of a preprocessed case (``image``, ``grid``: ``segment.preprocess``'s).

    ``predicted`` segments the case (sliding windows) and takes each class's predicted region, leaving
    out (``Target.skipped``) the classes not predicted at all; ``region`` maps a boolean array on the
    case grid; ``voxel`` maps one case voxel through world coordinates. Every mistake is a ValueError
    with one sentence.
    """
    from ..model.inference import infer, outside_head

    _check_target_kind(target)
    if target == "predicted":
        with torch.no_grad():
            logits = infer(image, card, network, progress=progress, should_cancel=should_cancel)
        # segment()'s mask step: no label where no input has signal, so the counts match the segmentation's
        outside = grid.to_network_grid(outside_head(case, card).astype(np.float32), interpolation="nearest") > 0.5
        return predicted_target(logits, indices, confident=confident, threshold=threshold,
                                output_space=output_space, activation=card.activation,
                                class_names=card.class_names, label_values=card.label_values, skip_empty=True,
                                outside=outside)
    if target == "region":
        if region is None:
            raise ValueError("A region target needs a region: a boolean array on the case grid.")
        region = np.asarray(region)
        if region.shape != case.shape:
            raise ValueError(f"The region has shape {region.shape} but the case has {case.shape}; paint it on the case.")
        on_grid = grid.to_network_grid(region.astype(np.float32), interpolation="nearest") > 0.5
        if not on_grid.any():
            raise ValueError("The region is empty on the model's grid (too small after resampling); paint a larger region.")
        goal = region_target(on_grid, indices, len(card.classes), output_space=output_space, activation=card.activation)
    else:
        goal = _voxel_target(case, grid, voxel, indices, len(card.classes), output_space, card.activation)
    return goal.named(card.class_names, card.label_values)


def _on_case_grid(goal: Target, unpad, grid, case, card) -> Target:
    """The target with its masks mapped back to the case grid (nearest); kept on the model grid if a class would vanish.

    A predicted region loses the voxels outside the head there too, as ``segment()``'s labels do.
    """
    from ..model.inference import outside_head

    masks = grid.to_case_grid(np.array(goal.masks[(slice(None),) + unpad]), interpolation="nearest")
    if goal.kind == "predicted":
        masks = np.logical_and(masks, ~outside_head(case, card))
    if not all(m.any() for m in masks):
        return goal
    return dataclasses.replace(goal, masks=masks)


def _split_progress(progress, two_stages: bool):
    """Progress callbacks for inference (first half) and attribution (second half, or all) on a 0..100 scale."""
    if progress is None:
        return None, None
    if not two_stages:
        return None, lambda done, total: progress(int(99 * done / max(total, 1)), 100)
    return (lambda done, total: progress(int(50 * done / max(total, 1)), 100),
            lambda done, total: progress(50 + int(49 * done / max(total, 1)), 100))


def _voxel_target(case, grid, voxel, indices, n_classes, output_space, activation) -> Target:
    """A one-voxel target on the model's grid at the case voxel ``voxel`` (mapped through world coordinates)."""
    if voxel is None or len(voxel) != len(case.shape):
        raise ValueError(f"A voxel target needs a voxel index with {len(case.shape)} coordinates.")
    point = np.asarray(voxel, dtype=float)
    if np.any(point < -0.5) or np.any(point > np.array(case.shape) - 0.5):
        raise ValueError(f"Voxel {tuple(voxel)} lies outside the case of shape {case.shape}; click inside the image.")
    world = case.affine @ np.append(point, 1.0)
    on_grid = np.linalg.solve(grid.affine, world)[:3]
    index = tuple(int(np.clip(np.rint(v), 0, s - 1)) for v, s in zip(on_grid, grid.shape))
    mask = np.zeros(grid.shape, dtype=bool)
    mask[index] = True
    return Target("voxel", indices, np.broadcast_to(mask, (len(indices),) + grid.shape), None, output_space, activation)


def _pad_to_windows(image: torch.Tensor, goal: Target, card):
    """Pad the grid with zeros to at least one window, as sliding_window_inference does; the slices that undo it."""
    roi = _roi(card, image)
    spatial = tuple(image.shape[2:])
    before = [max(r - s, 0) // 2 for r, s in zip(roi, spatial)]
    after = [max(r - s, 0) - b for r, s, b in zip(roi, spatial, before)]
    if not any(before) and not any(after):
        return image, goal, tuple(slice(None) for _ in spatial)
    pad = [v for b, a in zip(reversed(before), reversed(after)) for v in (b, a)]
    padded = F.pad(image, pad)
    masks = np.pad(goal.masks, [(0, 0)] + list(zip(before, after)))
    goal = dataclasses.replace(goal, masks=masks)
    return padded, goal, tuple(slice(b, b + s) for b, s in zip(before, spatial))


def _attribute_crop(method, model, image, goal: Target, card, margin, progress, should_cancel) -> torch.Tensor:
    """Relevance of the network on one crop around the target region (zero elsewhere), for non-additive methods."""
    spatial = tuple(image.shape[2:])
    crop, local, source, inside = target_crop(image, goal, card, margin)
    part = method.attribute(model, crop, local, progress, should_cancel)
    relevance = part.new_zeros((part.shape[0], part.shape[1]) + spatial)
    relevance[(slice(None), slice(None)) + source] = part[(slice(None), slice(None)) + inside]
    return relevance
