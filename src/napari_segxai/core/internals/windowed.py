"""One layer's output and the network's logits over a whole preprocessed image, window by window.

The image is visited with the card's sliding windows (MONAI's positions and importance map, as
segmentation does); each window's layer output is upsampled to the window and blended with the
same weights as the logits, so a coarse layer's map lands on the network grid voxel for voxel.
Slice-wise (2D) cards run their slices as the batch. A grid smaller than one window is first padded with
zeros to the window (centred, as MONAI's sliding_window_inference and nnU-Net pad it), so networks whose
strides need the whole window (nnU-Net's) run. Several layers share a pass, and a layer with many
channels is split over passes: the accumulators of one pass never exceed ``budget_bytes``.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map

from .. import progress as _progress
from ..attribution.windows import window_slices
from .layers import recording

#: Slices of a slice-wise card run through the network together.
SLICE_BATCH = 16


def as_stack(image: torch.Tensor, card) -> torch.Tensor:
    """The image (1, C, *grid) as the network's batch: itself for 3D cards, its slices (S, C, a, b) for 2D cards."""
    if card.spatial_dims == 3 or image.ndim - 2 == card.spatial_dims:
        return image
    return image[0].movedim(1 + card.slice_axis, 0)


def from_stack(stack: torch.Tensor, card, n_spatial: int) -> torch.Tensor:
    """Undo :func:`as_stack` on a result (B, C', *plane): (C', *grid)."""
    if stack.ndim - 2 == n_spatial:
        return stack[0]
    return stack.movedim(0, 1 + card.slice_axis)


def _chunks(batch: int, card) -> list[slice]:
    size = batch if card.spatial_dims == 3 else SLICE_BATCH
    return [slice(s, min(s + size, batch)) for s in range(0, batch, size)]


def padded_to_window(stack: torch.Tensor, card) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """The stack zero-padded to at least one window (half the missing voxels before, as MONAI and nnU-Net pad),
    and the slices of its spatial axes that undo the padding."""
    spatial = tuple(int(s) for s in stack.shape[2:])
    roi = tuple(int(r) for r in tuple(card.roi_size)[-len(spatial):])
    before = [max(r - s, 0) // 2 for r, s in zip(roi, spatial)]
    after = [max(r - s, 0) - b for r, s, b in zip(roi, spatial, before)]
    unpad = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    if not any(before) and not any(after):
        return stack, unpad
    return F.pad(stack, [v for b, a in zip(reversed(before), reversed(after)) for v in (b, a)]), unpad


def window_plan(stack: torch.Tensor, card) -> tuple[list[tuple[slice, ...]], np.ndarray, np.ndarray]:
    """The windows over the stack's spatial grid, the importance map of one window, and their summed coverage."""
    spatial = tuple(int(s) for s in stack.shape[2:])
    roi_size = tuple(card.roi_size)[-len(spatial):]
    windows = window_slices(spatial, roi_size, card.overlap)
    roi = tuple(w.stop - w.start for w in windows[0])
    importance = compute_importance_map(roi, mode=card.mode, device="cpu").float().numpy()
    coverage = np.zeros(spatial, dtype=np.float32)
    for window in windows:
        coverage[window] += importance
    return windows, importance, coverage


def plan_passes(channels: Sequence[tuple[str, int]], n_voxels: int, budget_bytes: int) -> list[list[tuple[str, slice]]]:
    """Sliding passes over the layers' channels, in order: each pass holds (layer, channel slice) items whose
    float32 maps on ``n_voxels`` voxels fit ``budget_bytes`` together (at least one channel per pass)."""
    per_pass = max(1, int(budget_bytes // max(4 * n_voxels, 1)))
    passes: list[list[tuple[str, slice]]] = []
    current: list[tuple[str, slice]] = []
    room = per_pass
    for layer, n in channels:
        begin = 0
        while begin < n:
            take = min(n - begin, room)
            current.append((layer, slice(begin, begin + take)))
            begin, room = begin + take, room - take
            if room == 0:
                passes.append(current)
                current, room = [], per_pass
    if current:
        passes.append(current)
    return passes


def _output(value) -> torch.Tensor:
    if isinstance(value, (list, tuple)):  # deep supervision: the full-resolution head
        value = value[0]
    return value


def _upsampled(activation: torch.Tensor, size: Sequence[int], layer: str) -> torch.Tensor:
    n_spatial = len(size)
    if activation.ndim != 2 + n_spatial:
        raise ValueError(
            f"Layer {layer!r} outputs a tensor shaped {tuple(activation.shape)}, not a feature map with "
            f"{n_spatial} spatial axes; choose a convolution, normalisation or activation layer."
        )
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[n_spatial]
    if tuple(activation.shape[2:]) == tuple(size):
        return activation.float()
    return F.interpolate(activation.float(), size=tuple(size), mode=mode, align_corners=False)


def layer_passes(
    network: torch.nn.Module,
    image: torch.Tensor,
    card,
    plan: Sequence[Sequence[tuple[str, slice]]],
    *,
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
) -> Iterator[tuple[list[tuple[str, slice]], list[torch.Tensor], Optional[torch.Tensor]]]:
    """Yield, per pass of ``plan`` (:func:`plan_passes`), its items, their maps (C_item, *grid) and the logits
    (K, *grid; with the first pass only, None after: one sliding pass gives both).

    Maps and logits are on the network grid of ``image`` (1, C, *grid), blended like the card's sliding-window
    inference.
    """
    stack, unpad = padded_to_window(as_stack(image, card), card)
    n_spatial = image.ndim - 2
    windows, importance, coverage = window_plan(stack, card)
    chunks = _chunks(int(stack.shape[0]), card)
    total = len(plan) * len(chunks) * len(windows)
    weights = torch.from_numpy(importance).to(image.device)
    cover = torch.from_numpy(coverage).to(image.device)
    done = 0
    for p, items in enumerate(plan):
        items = list(items)
        maps = [stack.new_zeros((stack.shape[0], group.stop - group.start) + tuple(stack.shape[2:]))
                for _, group in items]
        logits = None
        with recording(network, sorted({layer for layer, _ in items})) as outputs, torch.no_grad():
            for chunk in chunks:
                for window in windows:
                    _progress.step(done, total, progress, should_cancel)
                    crop = stack[(chunk, slice(None)) + window]
                    outputs.clear()
                    output = _output(network(crop)).float()
                    where = (chunk, slice(None)) + window
                    for (layer, group), accumulator in zip(items, maps):
                        if layer not in outputs:
                            raise ValueError(f"Layer {layer!r} was not run by the network's forward pass (an unused "
                                             "module); choose a layer the network computes.")
                        accumulator[where] += _upsampled(outputs[layer][:, group], crop.shape[2:], layer) * weights
                    if p == 0:
                        if logits is None:
                            logits = stack.new_zeros((stack.shape[0], output.shape[1]) + tuple(stack.shape[2:]))
                        logits[where] += output * weights
                    done += 1
        outputs.clear()
        cropped = (slice(None), slice(None)) + unpad
        for accumulator in maps:
            accumulator /= cover
        maps = [accumulator[cropped] for accumulator in maps]
        if logits is not None:
            logits = (logits / cover)[cropped]
        yield items, [from_stack(m, card, n_spatial) for m in maps], \
            None if logits is None else from_stack(logits, card, n_spatial)
    _progress.step(total, total, progress, None)
