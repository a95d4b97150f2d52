"""A surrogate of the network fitted on a case: features and labels on the network grid, labels back on the case grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .. import progress as _progress
from ..model.card import build_network
from ..model.device import pick_device
from ..model.inference import infer, silent_voxels
from ..model.preprocess import preprocess
from .features import class_masks, labels_from_masks
from .surrogate import Surrogate, fit_surrogate, voxel_features


@dataclass(frozen=True, eq=False)
class CaseSurrogate:
    """A fitted surrogate and its labels on the case grid (label values of the card's classes, like a segmentation)."""

    surrogate: Surrogate
    labels: np.ndarray   # (*case shape) int16 label values the surrogate predicts
    affine: np.ndarray


def network_view(case, card, network, device, should_cancel=None):
    """The preprocessed image (1, C, *grid), its grid, and the network's class index per voxel (-1 outside the head)."""
    image, grid = preprocess(case, card, device=device)
    head = ~torch.as_tensor(silent_voxels(image[0]), device=image.device)
    with torch.no_grad():
        logits = infer(image, card, network, progress=None, should_cancel=should_cancel)[0].float()
    return image, grid, labels_from_masks(class_masks(logits, card.activation) & head)


def case_surrogate(
    case,
    card,
    *,
    kind: str = "tree",
    depth: int = 3,
    network: Optional[torch.nn.Module] = None,
    device=None,
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
    **options,
) -> CaseSurrogate:
    """Fit a ``kind`` surrogate of the network's labels on ``case`` (``options`` go to :func:`.fit_surrogate`)."""
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    _progress.step(0, 3, progress, should_cancel)
    image, grid, labels = network_view(case, card, network, device, should_cancel)
    _progress.step(1, 3, progress, should_cancel)
    features, names = voxel_features(image, card.modalities)
    values = card.label_values
    foreground = [k for k, v in enumerate(values) if v != 0] if card.activation == "softmax" else list(range(len(values)))
    fitted = fit_surrogate(features, labels.cpu().numpy(), names, card.class_names, kind=kind, depth=depth,
                           foreground=foreground, **options)
    _progress.step(2, 3, progress, should_cancel)
    predicted = torch.as_tensor(fitted.predict(features).astype(np.float32))
    on_case = np.asarray(grid.to_case_grid(predicted, interpolation="nearest")).astype(np.int16)
    lookup = np.asarray(values, dtype=np.int16)
    outside = silent_voxels([np.asarray(c) for c in np.asarray(grid.to_case_grid(image[0].cpu()))])
    result = lookup[np.clip(on_case, 0, len(values) - 1)]
    result[outside] = 0
    _progress.step(3, 3, progress, None)
    return CaseSurrogate(fitted, result, np.array(case.affine, dtype=float))
