"""Occlusion: Zeiler and Fergus 2014, arXiv:1311.2901, with cubes over any number of spatial dimensions."""

from __future__ import annotations

import itertools
import math

import torch

from .. import progress as _progress
from .base import AttributionMethod, Parameter, register, samples_per_batch


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window along one axis, as captum's Occlusion places them (the last may be cut by the border)."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


@register("occlusion")
class Occlusion(AttributionMethod):
    """Drop of each target scalar when a cube is set to a baseline, averaged over the cubes covering a voxel."""

    signed = True
    parameters = {
        "window": Parameter(8, "side of the occluded cube in voxels (cut to the volume's size)", minimum=1),
        "stride": Parameter(4, "step between cubes in voxels (at most the window)", minimum=1),
        "baseline": Parameter(0.0, "value written into the occluded cube"),
        "per_channel": Parameter(True, "occlude each input channel alone (one map per channel)"),
        "batch_size": Parameter(0, "occluded copies per forward pass; 0 chooses from free memory", minimum=0),
    }

    def _validate(self) -> None:
        if self.params["stride"] > self.params["window"]:
            raise ValueError(
                f"occlusion: stride {self.params['stride']} is larger than the window "
                f"{self.params['window']}, which would leave voxels never occluded; lower the stride."
            )

    @property
    def channel_resolved(self) -> bool:
        return self.params["per_channel"]

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        windows = [min(self.params["window"], s) for s in spatial]
        stride = self.params["stride"]
        cubes = list(itertools.product(*[
            [slice(a, min(a + w, s)) for a in window_starts(s, w, stride)] for s, w in zip(spatial, windows)
        ]))
        groups = [slice(c, c + 1) for c in range(inputs.shape[1])] if self.params["per_channel"] else [slice(None)]
        units = [(g, cube) for g in groups for cube in cubes]
        n = len(units)
        batch = samples_per_batch(network, inputs, n, self.params["batch_size"], with_gradients=False)
        n_maps = len(groups)
        relevance = inputs.new_zeros((len(target.classes), n_maps) + spatial)
        counts = inputs.new_zeros((n_maps,) + spatial)
        with torch.no_grad():
            reference = target.scalars(network(inputs))[0]
            for start in range(0, n, batch):
                _progress.step(start, n, progress, should_cancel)
                chunk = units[start : start + batch]
                occluded = inputs.repeat(len(chunk), *([1] * (inputs.ndim - 1)))
                for i, (group, cube) in enumerate(chunk):
                    occluded[(i, group) + cube] = self.params["baseline"]
                drop = reference - target.scalars(network(occluded))
                for i, (group, cube) in enumerate(chunk):
                    relevance[(slice(None), group) + cube] += drop[i].view((-1, 1) + (1,) * len(spatial))
                    counts[(group,) + cube] += 1
        _progress.step(n, n, progress, None)
        return relevance / counts
