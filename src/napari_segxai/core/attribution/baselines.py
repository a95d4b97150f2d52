"""Reference inputs of the path and difference methods: zeros, each channel's minimum, a blurred input."""

from __future__ import annotations

import torch
from scipy import ndimage

BASELINES = ("zeros", "minimum", "blurred")


def make_baseline(inputs: torch.Tensor, kind: str, blur_sigma: float = 5.0) -> torch.Tensor:
    """The reference input: zeros, each channel's minimum, or the input blurred per channel."""
    if kind == "zeros":
        return torch.zeros_like(inputs)
    if kind == "minimum":
        minimum = inputs.transpose(0, 1).flatten(1).min(1).values
        return minimum.view(1, -1, *([1] * (inputs.ndim - 2))).expand_as(inputs).clone()
    if kind == "blurred":
        array = inputs.detach().cpu().double().numpy()
        sigma = (0, 0) + (float(blur_sigma),) * (inputs.ndim - 2)
        blurred = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest")
        return torch.as_tensor(blurred, dtype=inputs.dtype, device=inputs.device)
    raise ValueError(f"Unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}.")
