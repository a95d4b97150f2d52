"""Activation maximisation: the input a class or a channel responds to most (Erhan et al. 2009; Olah et al. 2017).

The input x is optimised by gradient ascent on an objective f(x) (a class's region logit, as the
relevance target: the class's logit summed over its region, here divided by the region's size; or
one channel's unit at the centre of a layer) with the regularisers that keep the result readable:

    maximise  f(roll(x, s)) - tv * TV(x)      s ~ U{-jitter..jitter} per axis and step,
    every ``blur_every`` steps x <- G_sigma * x,   after every step x <- clip(x, low_c, high_c) per sequence.

TV is the mean absolute difference between neighbouring voxels; the bounds are each sequence's
0.5th and 99.5th percentiles in the head of the start, so the result stays an image the network
could see. The objective reached is reported without the regulariser.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import progress as _progress
from ..attribution.targets import region_target
from .layers import recording

Objective = Callable[[torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True, eq=False)
class Maximised:
    """An optimised input (C, *spatial), the objective before and after, and how it was reached."""

    objective: str
    volume: np.ndarray
    start_value: float
    value: float
    history: tuple[float, ...]
    bounds: np.ndarray   # (C, 2) the per-sequence intensity bounds
    steps: int
    seconds: float

    def describe(self) -> str:
        """One line: what was maximised and the value reached."""
        return (f"{self.objective}: {self.start_value:.4g} -> {self.value:.4g} after {self.steps} steps "
                f"({self.seconds:.1f} s)")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring voxels along every spatial axis of x (B, C, *spatial)."""
    parts = [x.diff(dim=axis).abs().mean() for axis in range(2, x.ndim) if x.shape[axis] > 1]
    return torch.stack(parts).sum() if parts else x.new_zeros(())


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (B, C, *spatial) smoothed by a Gaussian of ``sigma`` voxels along every spatial axis (edges replicated)."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(2.5 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n_spatial, channels = x.ndim - 2, x.shape[1]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n_spatial]
    for axis in range(n_spatial):
        shape = [1] * n_spatial
        shape[axis] = kernel.numel()
        pad = [0, 0] * n_spatial
        pad[2 * (n_spatial - 1 - axis)] = pad[2 * (n_spatial - 1 - axis) + 1] = radius
        x = conv(F.pad(x, pad, mode="replicate"), kernel.view([1, 1] + shape).repeat(channels, 1, *([1] * n_spatial)),
                 groups=channels)
    return x


def sequence_bounds(image: torch.Tensor, head: Optional[torch.Tensor] = None, low: float = 0.5,
                    high: float = 99.5) -> np.ndarray:
    """(C, 2) each sequence's ``low`` and ``high`` percentiles of image (1, C, *spatial) inside ``head``."""
    bounds = []
    for channel in image[0]:
        values = channel[head] if head is not None and bool(head.any()) else channel.reshape(-1)
        values = values.float()
        if values.numel() > 2_000_000:  # percentiles of a regular subsample: same to a few digits, far faster
            values = values[:: values.numel() // 1_000_000]
        q = torch.quantile(values, torch.tensor([low / 100, high / 100], dtype=values.dtype, device=values.device))
        lo, hi = float(q[0]), float(q[1])
        bounds.append((lo, hi if hi > lo else lo + 1.0))
    return np.asarray(bounds, dtype=np.float64)


def neutral_start(image: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """A brain of flat contrast: each sequence's median inside ``head`` there, its value outside elsewhere."""
    start = image.clone()
    for c in range(image.shape[1]):
        inside = image[0, c][head]
        if inside.numel():
            start[0, c][head] = inside.median()
    return start


def class_objective(class_index: int, region: np.ndarray, n_classes: int, activation: str = "softmax") -> Objective:
    """The class's logit summed over ``region`` (bool, *spatial), per region voxel: the relevance target's scalar."""
    target = region_target(region, class_index, n_classes, activation=activation)
    size = float(max(int(np.count_nonzero(region)), 1))

    def objective(output: torch.Tensor, _recorded: dict) -> torch.Tensor:
        return target.scalars(output)[0, 0] / size

    return objective


def channel_objective(layer: str, channel: int) -> Objective:
    """Channel ``channel`` of layer ``layer`` at the centre of its output (one unit)."""

    def objective(_output: torch.Tensor, recorded: dict) -> torch.Tensor:
        activation = recorded[layer]
        if not 0 <= channel < activation.shape[1]:
            raise ValueError(f"Layer {layer!r} has channels 0..{activation.shape[1] - 1}; channel {channel} does not exist.")
        centre = tuple(s // 2 for s in activation.shape[2:])
        return activation[(0, channel) + centre]

    return objective


def _unrolled(tensor: torch.Tensor, shift: Sequence[int], input_shape: Sequence[int]) -> torch.Tensor:
    """Undo a roll of the input by ``shift`` on a tensor (B, C, *spatial) of the input's or a coarser resolution."""
    if not any(shift) or tensor.ndim != 2 + len(shift):
        return tensor
    scaled = [-round(s * n / m) for s, n, m in zip(shift, tensor.shape[2:], input_shape)]
    return torch.roll(tensor, scaled, dims=tuple(range(2, tensor.ndim)))


def maximise(
    network: torch.nn.Module,
    start: torch.Tensor,
    objective: Objective,
    *,
    name: str,
    layer: Optional[str] = None,
    bounds: Optional[np.ndarray] = None,
    steps: int = 64,
    learning_rate: float = 0.05,
    tv: float = 0.05,
    blur_sigma: float = 0.5,
    blur_every: int = 4,
    jitter: int = 2,
    seed: int = 0,
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
) -> Maximised:
    """Optimise ``start`` (1, C, *spatial) to maximise ``objective`` (of the output and the recorded ``layer``)."""
    if steps < 1:
        raise ValueError(f"Activation maximisation needs at least one step, not {steps}.")
    if start.ndim < 3 or start.shape[0] != 1:
        raise ValueError(f"The start must be one input (1, C, *spatial), got {tuple(start.shape)}.")
    began = time.perf_counter()
    bounds = sequence_bounds(start) if bounds is None else np.asarray(bounds, dtype=np.float64)
    if bounds.shape != (start.shape[1], 2):
        raise ValueError(f"Give one (low, high) bound per input sequence ({start.shape[1]}), got shape {bounds.shape}.")
    shape = (1, -1) + (1,) * (start.ndim - 2)
    low = torch.as_tensor(bounds[:, 0], dtype=start.dtype, device=start.device).view(shape)
    high = torch.as_tensor(bounds[:, 1], dtype=start.dtype, device=start.device).view(shape)
    scale = (high - low).clamp_min(1e-6)
    x = torch.clamp(start.detach().clone(), low, high).requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    layers = [layer] if layer else []
    history = []
    params = [p for p in network.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with recording(network, layers, detach=False) as recorded:
            def value_of(volume: torch.Tensor, shift: Sequence[int]) -> torch.Tensor:
                rolled = torch.roll(volume, tuple(shift), dims=tuple(range(2, volume.ndim))) if any(shift) else volume
                output = network(rolled)
                output = output[0] if isinstance(output, (list, tuple)) else output
                seen = {k: _unrolled(v, shift, volume.shape[2:]) for k, v in recorded.items()}
                return objective(_unrolled(output, shift, volume.shape[2:]), seen)

            with torch.no_grad():
                start_value = float(value_of(x, [0] * (x.ndim - 2)))
            for i in range(steps):
                _progress.step(i, steps, progress, should_cancel)
                shift = [int(s) for s in torch.randint(-jitter, jitter + 1, (x.ndim - 2,), generator=generator)] \
                    if jitter > 0 else [0] * (x.ndim - 2)
                optimiser.zero_grad()
                value = value_of(x, shift)
                loss = -value + tv * total_variation(x / scale)
                loss.backward()
                optimiser.step()
                with torch.no_grad():
                    if blur_every > 0 and blur_sigma > 0 and (i + 1) % blur_every == 0:
                        x.copy_(gaussian_blur(x, blur_sigma))
                    x.copy_(torch.maximum(torch.minimum(x, high), low))
                history.append(float(value.detach()))
            with torch.no_grad():
                final = float(value_of(x, [0] * (x.ndim - 2)))
    finally:
        for p in params:
            p.requires_grad_(True)
    _progress.step(steps, steps, progress, None)
    return Maximised(objective=name, volume=x.detach()[0].cpu().numpy().astype(np.float32), start_value=start_value,
                     value=final, history=tuple(history), bounds=bounds, steps=steps,
                     seconds=time.perf_counter() - began)
