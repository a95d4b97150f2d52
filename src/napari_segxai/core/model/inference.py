"""Segment a case with a model card: preprocess, sliding-window inference, back to the case's grid.

Every model source's segmentation then goes through one mask step, :func:`remove_outside_head`: a
voxel where every input channel the model reads holds no signal (the channel's value is 0 or the
channel's minimum, the two ways scanners and skull-stripping tools write "nothing here") is outside
the head, and any label there is set to background (probabilities: 1 for the background class, 0 for
the others; a sigmoid model's regions all 0). How many labelled voxels were removed is kept on the
:class:`Segmentation` as ``outside_removed``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

from ..progress import CancelFn, ProgressFn, cancel_inside, step
from .card import ClassInfo, ModelCard, build_network
from .device import autocast, pick_device
from .preprocess import ArrayLike, as_tensor, preprocess, refuse_if_too_large_to_segment

if TYPE_CHECKING:
    from ...case import Case


#: Slices a slice-wise (2D) model sees per sliding-window call.
SLICE_BATCH = 32


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Class probabilities and labels of one case, on the case's own voxel grid."""

    probabilities: np.ndarray  # (K, X, Y, Z) float32
    labels: np.ndarray  # (X, Y, Z) int16 label values of the card's classes
    classes: tuple[ClassInfo, ...]
    affine: np.ndarray  # the case's affine
    device: str
    seconds: float
    #: Labelled voxels set to background by :func:`remove_outside_head` (no signal in any input channel).
    outside_removed: int = 0
    #: The domain check (:func:`.domain.check_domain`) when the caller ran one, else None.
    domain: Optional[object] = None


def segment(
    case: Case,
    card: ModelCard,
    *,
    network: Optional[torch.nn.Module] = None,
    device: Union[str, torch.device, None] = None,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> Segmentation:
    """Segment ``case`` with the model of ``card`` by sliding-window inference; results on the case's grid."""
    start = time.perf_counter()
    device = pick_device(device)
    refuse_if_too_large_to_segment(case, card, device)
    if card.source is not None:  # a model folder: its own pipeline (nnU-Net's, with the folds' ensemble)
        probabilities, labels = card.source.segment(case, card, network, device=device, progress=progress,
                                                    should_cancel=should_cancel)
        removed = remove_outside_head(probabilities, labels, outside_head(case, card), card)
        return Segmentation(probabilities=probabilities, labels=labels, classes=card.classes,
                            affine=np.array(case.affine, dtype=np.float64), device=str(device),
                            seconds=time.perf_counter() - start, outside_removed=removed)
    if network is None:
        network = build_network(card, device)
    else:
        network = network.to(device).eval()
    with torch.inference_mode():
        image, grid = preprocess(case, card, device=device)
        logits = infer(image, card, network, progress=progress, should_cancel=should_cancel)
        if logits.shape[1] != len(card.classes):
            raise ValueError(
                f"The network of model card {card.path} returned {logits.shape[1]} channels but the card's "
                f"'classes' lists {len(card.classes)}; give one class per output channel."
            )
        probabilities = grid.to_case_grid(activate(logits[0].float(), card.activation))
        labels = labels_from_probabilities(probabilities, card).cpu().numpy()
        probabilities = probabilities.cpu().numpy().astype(np.float32, copy=False)
    removed = remove_outside_head(probabilities, labels, outside_head(case, card), card)
    return Segmentation(
        probabilities=probabilities,
        labels=labels,
        classes=card.classes,
        affine=np.array(case.affine, dtype=np.float64),
        device=str(device),
        seconds=time.perf_counter() - start,
        outside_removed=removed,
    )


def silent_voxels(channels):
    """(C, *spatial) numpy array or torch tensor -> bool (*spatial): every channel is 0 or at its minimum there.

    The one rule for "no signal" (outside the head): segmentation, explanation targets, the domain
    check and the viewer's relevance overlays all use it.
    """
    silent = None
    for channel in channels:
        here = (channel == 0) | (channel == channel.min())
        silent = here if silent is None else silent & here
    return silent


def outside_head(case: Case, card: ModelCard) -> np.ndarray:
    """Voxels (bool, case grid) where every channel the card reads has no signal (:func:`silent_voxels`)."""
    from .preprocess import channel_indices

    return silent_voxels([np.asarray(case.channels[i]) for i in channel_indices(case, card)])


def remove_outside_head(probabilities: np.ndarray, labels: np.ndarray, outside: np.ndarray, card: ModelCard) -> int:
    """Set labels and probabilities (in place) to background on ``outside``; how many labelled voxels that removed."""
    values = card.label_values
    background = values.index(0) if 0 in values else 0
    background_value = values[background] if card.activation == "softmax" else 0
    removed = int(np.count_nonzero(labels[outside] != background_value))
    labels[outside] = background_value
    probabilities[:, outside] = 0.0
    if card.activation == "softmax":
        probabilities[background][outside] = 1.0
    return removed


def infer(
    image: torch.Tensor,
    card: ModelCard,
    network: torch.nn.Module,
    *,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> torch.Tensor:
    """Sliding-window logits (1, K, *grid) of ``network`` on a preprocessed ``image``, float32."""
    from monai.inferers import sliding_window_inference

    if card.source is not None:  # a model folder predicts as its framework does (nnU-Net: its windows, mirroring)
        return card.source.logits(image, card, network, progress=progress, should_cancel=should_cancel)

    if card.spatial_dims == 3:
        batches = [image]
    else:  # slice-wise: slices become the batch, in groups
        slices = image[0].movedim(1 + card.slice_axis, 0)  # (S, C, a, b)
        batches = list(torch.split(slices, SLICE_BATCH))
    spatial = tuple(int(s) for s in batches[0].shape[2:])
    per_image = count_windows(spatial, card.roi_size, card.overlap)
    flips = mirror_subsets(card.mirror_axes)
    predictor = _CountingPredictor(network, per_image * sum(b.shape[0] for b in batches) * len(flips), progress,
                                   should_cancel)

    def windows(batch: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            batch, roi_size=card.roi_size, sw_batch_size=card.sw_batch_size, predictor=predictor,
            overlap=card.overlap, mode=card.mode, sw_device=image.device, device=image.device,
        )

    with cancel_inside(network, should_cancel):
        outputs = []
        for batch in batches:  # the mirror images' logits mirrored back and averaged, as nnU-Net does
            total = windows(batch).float()
            for axes in flips[1:]:
                dims = [2 + axis for axis in axes]
                total += torch.flip(windows(torch.flip(batch, dims)), dims)
            outputs.append(total / len(flips) if len(flips) > 1 else total)
    step(predictor.total, predictor.total, progress, None)
    if card.spatial_dims == 3:
        return outputs[0].float()
    return torch.cat(outputs).movedim(0, 1 + card.slice_axis).unsqueeze(0).float()


def mirror_subsets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the mirror ``axes``, the empty one (no flip) first: 2^len(axes) passes."""
    return [subset for size in range(len(axes) + 1) for subset in itertools.combinations(axes, size)]


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """How many windows ``monai.inferers.sliding_window_inference`` takes over one image."""
    total = 1
    for size, roi in zip(image_size, roi_size):
        size = max(size, roi)
        interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
        total *= math.ceil((size - roi) / interval) + 1 if size > roi else 1
    return total


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Probabilities from logits (K, ...) by softmax over classes or per-class sigmoid."""
    if activation == "softmax":
        return torch.softmax(logits, dim=0)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"Unknown activation {activation!r}; use softmax or sigmoid.")


def labels_from_probabilities(probabilities: ArrayLike, card: ModelCard) -> ArrayLike:
    """Label values (int16): argmax for softmax; for sigmoid the last class above 0.5 (nested regions), else 0."""
    tensor, was_numpy = as_tensor(probabilities)
    values = card.label_values
    if card.activation == "softmax":  # a running argmax, in place: far faster than argmax(dim=0) on a CPU
        labels = torch.full(tensor.shape[1:], values[0], dtype=torch.int16, device=tensor.device)
        best = tensor[0].clone()
        better = torch.empty(tensor.shape[1:], dtype=torch.bool, device=tensor.device)
        for k in range(1, tensor.shape[0]):
            torch.gt(tensor[k], best, out=better)
            torch.maximum(best, tensor[k], out=best)
            labels.masked_fill_(better, values[k])
    else:
        labels = torch.zeros(tensor.shape[1:], dtype=torch.int16, device=tensor.device)
        for k in range(tensor.shape[0]):
            labels.masked_fill_(tensor[k] > 0.5, values[k])
    return labels.cpu().numpy() if was_numpy else labels


class _CountingPredictor:
    """Runs the network on a batch of windows, reporting windows done and stopping when cancelled."""

    def __init__(self, network, total: int, progress, should_cancel):
        self.network, self.total, self.done = network, total, 0
        self.progress, self.should_cancel = progress, should_cancel

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        step(self.done, self.total, self.progress, self.should_cancel)
        try:
            with autocast(windows.device):
                output = self.network(windows)
        except torch.cuda.OutOfMemoryError as err:
            raise ValueError(
                f"The network ran out of GPU memory on {windows.shape[0]} windows of {tuple(windows.shape[2:])} "
                "voxels; lower inference.sw_batch_size or roi_size in the model card, or run on the CPU."
            ) from err
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"The network failed on input windows shaped {tuple(windows.shape)} ({first}); check that the "
                "model card's modalities, kwargs and inference.roi_size match the network."
            ) from err
        if isinstance(output, (list, tuple)):  # deep-supervision style outputs: the full-resolution head
            output = output[0]
        self.done += int(windows.shape[0])
        return output.float()
