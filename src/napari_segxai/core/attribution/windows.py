"""Relevance of a sliding-window model, computed window by window and accumulated on the whole grid.

A sliding-window segmentation of a large volume blends the outputs of overlapping windows:
y(v) = sum_w g_w(v) y_w(v) / G(v), with g_w MONAI's importance map of window w and
G = sum_w g_w. The explained scalar is therefore a sum over windows,

    S_c(x) = sum_w  sum_{v in M_c and w}  (g_w(v) / G(v)) y_w,c(x_w)[v],

each term depending only on the window's crop x_w. For methods that are linear in the
explained function (gradients, input x gradient, Integrated Gradients, guided backprop,
deconvolution, DeepLIFT, SmoothGrad's mean over them with its noise drawn once on the whole
grid and cropped) the relevance of S_c is the sum of each window's relevance of its
own weighted term, placed at the window's position: only the windows that meet the target
region are run, one window in memory at a time. This is exact for logits (when the model
blends logits); for probabilities it explains the blend of per-window probabilities.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from .. import progress as _progress
from .base import AttributionMethod, check_inputs, frozen_parameters, get_method
from .targets import Target


def window_slices(spatial: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """The windows MONAI's sliding_window_inference visits on a grid of ``spatial`` (roi cut to the grid)."""
    roi = tuple(min(int(r), int(s)) for r, s in zip(roi_size, spatial))
    interval = _get_scan_interval(tuple(spatial), roi, len(spatial), (overlap,) * len(spatial))
    return [tuple(window) for window in dense_patch_slices(tuple(spatial), roi, interval)]


def windowed_attribute(
    method: str | AttributionMethod,
    network: torch.nn.Module,
    inputs: torch.Tensor,
    target: Target,
    *,
    roi_size: Sequence[int],
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    importance: np.ndarray | torch.Tensor | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> torch.Tensor:
    """Relevance (K_t, C, *spatial) of a sliding-window model, one window that meets the target at a time.

    ``importance`` replaces MONAI's importance map of a window (shape ``roi_size`` cut to the grid).
    """
    if isinstance(method, str):
        method = get_method(method)
    if not method.windowable:
        raise ValueError(
            f"{method.name} is not additive over windows; choose one of "
            f"{', '.join(windowable_methods())} (or smoothgrad's mean over one without a baseline), "
            "or run it on a volume that fits one window."
        )
    inputs = check_inputs(inputs, target)
    spatial = tuple(inputs.shape[2:])
    if len(roi_size) != len(spatial):
        raise ValueError(f"The window size {tuple(roi_size)} needs {len(spatial)} dimensions like the input.")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"The window overlap must be in [0, 1), got {overlap}.")
    windows = window_slices(spatial, roi_size, overlap)
    roi = tuple(w.stop - w.start for w in windows[0])
    if importance is None:
        importance = compute_importance_map(roi, mode=mode, sigma_scale=sigma_scale, device="cpu").float().numpy()
    else:
        importance = np.asarray(importance.cpu() if isinstance(importance, torch.Tensor) else importance, dtype=np.float32)
        if importance.shape != roi:
            raise ValueError(f"The importance map has shape {importance.shape}, the windows {roi}.")
    coverage = np.zeros(spatial, dtype=np.float64)
    for window in windows:
        coverage[window] += importance
    on_window = method.for_windows(inputs)
    relevance = None
    meeting = target_windows(windows, target)
    with frozen_parameters(network):
        for i, window in enumerate(meeting):
            _progress.step(i * SHARES, len(meeting) * SHARES, progress, should_cancel)
            masks = target.masks[(slice(None),) + window]
            present = [k for k in range(len(target.classes)) if masks[k].any()]
            weights = (importance / coverage[window]).astype(np.float32)
            if target.weights is not None:
                weights = weights * target.weights[(slice(None),) + window]
            else:
                weights = np.broadcast_to(weights, masks.shape)
            local = Target(target.kind, tuple(target.classes[k] for k in present), masks[present], target.threshold,
                           target.output, target.activation, np.asarray(weights)[present])
            crop = inputs[(slice(None), slice(None)) + window]
            part = on_window(window).attribute(network, crop, local, _within(progress, i, len(meeting)), should_cancel)
            if relevance is None:
                relevance = inputs.new_zeros((len(target.classes), part.shape[1]) + spatial)
            for j, k in enumerate(present):
                relevance[(k, slice(None)) + window] += part[j]
    _progress.step(len(meeting) * SHARES, len(meeting) * SHARES, progress, None)
    return relevance


#: Progress units per window: a window's own steps (its classes, its batches) move the bar inside its share.
SHARES = 1000


def target_windows(windows: Sequence[tuple[slice, ...]], target: Target) -> list[tuple[slice, ...]]:
    """The windows that meet the target region of at least one class (only they are run)."""
    return [w for w in windows if any(target.masks[(k,) + tuple(w)].any() for k in range(len(target.classes)))]


def _within(progress: _progress.ProgressFn | None, index: int, count: int) -> _progress.ProgressFn | None:
    """The progress callback of window ``index`` of ``count``: its steps within its share of the whole."""
    if progress is None:
        return None
    return lambda done, total: progress(index * SHARES + int(SHARES * done / max(total, 1)), count * SHARES)


def windowable_methods() -> tuple[str, ...]:
    """Registered methods whose relevance adds up over sliding windows (besides SmoothGrad's mean over one of them)."""
    from .base import available_methods, method_class

    return tuple(m for m in available_methods() if method_class(m).windowable)
