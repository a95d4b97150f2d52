"""Occlusion: Zeiler and Fergus 2014, arXiv:1311.2901, with cubes over any number of spatial dimensions."""

from __future__ import annotations

import itertools
import math

import torch

from .. import progress as _progress
from .base import AttributionMethod, Parameter, register, samples_per_batch
from .bounded import Plan, bounded_drops, crop_batch, plan
from .cost import TIME_BUDGET_S, Passes
from .receptive_field import BoundedByReach, held_normalisation
from .unchanged import ChangedBoxes

#: The finest automatic cube side: finer cubes are one parameter away (window=4), with their cost shown first.
SMALLEST_AUTO_WINDOW = 8


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window along one axis, as captum's Occlusion places them (the last may be cut by the border)."""
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


@register("occlusion")
class Occlusion(BoundedByReach, AttributionMethod):
    """Drop of each target scalar when a cube is set to a baseline, averaged over the cubes covering a voxel."""

    signed = True
    parameters = {
        "window": Parameter(0, "side of the occluded cube in voxels (cut to the volume's size); 0: the smallest "
                            f"(at least {SMALLEST_AUTO_WINDOW}) whose passes fit about {TIME_BUDGET_S:.0f} s on this device",
                            minimum=0, auto=True),
        "stride": Parameter(0, "step between cubes in voxels (at most the window); 0: half the window", minimum=0,
                            auto=True),
        "baseline": Parameter(0.0, "value written into the occluded cube"),
        "per_channel": Parameter(True, "occlude each input channel alone (one map per channel)"),
        "batch_size": Parameter(0, "occluded copies per forward pass; 0 chooses from free memory", minimum=0),
        "bounded": Parameter(True, "run each occluded copy only on the crop its receptive field can change (the "
                             "whole input where the network cannot be bounded)"),
        "reach_tolerance": Parameter(0.01, "bounded: leave out input voxels whose gradient is below this share of "
                                     "the peak when measuring the receptive field; 0: its whole support (exact "
                                     "for networks without instance normalisation, but the crop is often the input)",
                                     minimum=0.0, maximum=0.5),
        "hold_statistics": Parameter(False, "bounded on a network with instance or group normalisation, its "
                                     "statistics held at the unperturbed input's (approximate: Spearman 0.59 with the "
                                     "whole evaluation on the demo UNet, docs/attribution.md)"),
    }

    auto_parameters = ("window", "stride")

    def _validate(self) -> None:
        if self.params["window"] and self.params["stride"] > self.params["window"]:
            raise ValueError(
                f"occlusion: stride {self.params['stride']} is larger than the window "
                f"{self.params['window']}, which would leave voxels never occluded; lower the stride."
            )

    @property
    def channel_resolved(self) -> bool:
        return self.params["per_channel"]

    def replacement(self, inputs: torch.Tensor) -> float:
        """What an occluded cube holds: the baseline value."""
        return self.params["baseline"]

    def grid(self, spatial: tuple[int, ...], window: int, stride: int) -> tuple[list[list[int]], list[list[int]]]:
        """Per axis, the starts and stops of the cubes of ``window`` at ``stride`` (as captum's Occlusion places them)."""
        starts = [window_starts(s, min(window, s), stride) for s in spatial]
        return starts, [[min(a + min(window, s), s) for a in axis] for axis, s in zip(starts, spatial)]

    def occlusions(self, shape: tuple[int, ...], window: int, stride: int) -> int:
        """How many occluded copies of an input (C, *spatial) cubes of ``window`` at ``stride`` make.

        Once prepared on the input, cubes that already hold the baseline (they change nothing) are left out.
        """
        starts, stops = self.grid(tuple(shape[1:]), window, stride)
        changing = self.changed_boxes(shape[1:], starts, stops)
        if changing is not None:
            return int(changing.sum())
        groups = shape[0] if self.params["per_channel"] else 1
        return groups * math.prod(len(axis) for axis in starts)

    def plan(self, shape: tuple[int, ...], window: int, stride: int) -> Plan:
        """Where the occluded copies of an input (C, *spatial) run: bounded crops, or the whole input and why."""
        reach = self._reach if self.params["bounded"] else None
        starts, stops = self.grid(tuple(shape[1:]), window, stride)
        boxes = [[slice(a, b) for a, b in zip(*axis)] for axis in zip(starts, stops)]
        return plan(shape[1:], boxes, reach, shape[0] if self.params["per_channel"] else 1,
                    self.params["hold_statistics"])

    def _forward_passes(self, shape: tuple[int, ...], window: int, stride: int) -> float:
        """Input-sized forward passes of the occluded copies (a crop's pass counts its share of the voxels)."""
        work = self.plan(shape, window, stride)
        return self.reach_passes + work.forward_passes(self.occlusions(shape, window, stride))

    def settle(self, speed, target) -> "Occlusion":
        """The window: the smallest from SMALLEST_AUTO_WINDOW up whose passes fit the time budget; stride: half of it."""
        window, stride = self.params["window"], self.params["stride"]
        if window == 0:
            affordable = TIME_BUDGET_S / max(speed.forward_seconds, 1e-9) - 1
            largest = max(speed.shape[1:])
            window = next((w for w in range(min(SMALLEST_AUTO_WINDOW, largest), largest + 1)
                           if self._forward_passes(speed.shape, w, min(stride, w) or max(1, w // 2)) <= affordable),
                          largest)
        stride = min(stride, window) or max(1, window // 2)
        return self.replaced(window=window, stride=stride)

    def passes(self, shape, target) -> Passes:
        """One forward pass of the input, one per occluded copy; a bounded copy counts its crop's share of the input."""
        return Passes(1 + math.ceil(self._forward_passes(shape, self.params["window"], self.params["stride"])),
                      batch=self.params["batch_size"])

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        spatial = tuple(inputs.shape[2:])
        starts, stops = self.grid(spatial, self.params["window"], self.params["stride"])
        cubes = list(itertools.product(*[[slice(a, b) for a, b in zip(*axis)] for axis in zip(starts, stops)]))
        groups = [slice(c, c + 1) for c in range(inputs.shape[1])] if self.params["per_channel"] else [slice(None)]
        units = [(g, cube) for g in groups for cube in cubes]
        # a cube that already holds the baseline changes nothing: its drop is exactly 0, without a pass
        changing = ChangedBoxes(self.changes(inputs)).changing(starts, stops).ravel()
        active = [unit for unit, changes in zip(units, changing) if changes]
        method = self.ready(network, inputs)
        work = method.plan(tuple(inputs.shape[1:]), self.params["window"], self.params["stride"])
        if not active:
            drops = inputs.new_zeros((0, len(target.classes)))
            _progress.step(1, 1, progress, should_cancel)
        elif work.bounded:
            drops = method._bounded(network, inputs, target, active, work, progress, should_cancel)
        else:
            drops = method._whole(network, inputs, target, active, progress, should_cancel)
        n_maps = len(groups)
        relevance = inputs.new_zeros((len(target.classes), n_maps) + spatial)
        counts = inputs.new_zeros((n_maps,) + spatial)
        for (group, cube), drop in zip(active, drops):
            relevance[(slice(None), group) + cube] += drop.view((-1, 1) + (1,) * len(spatial))
        for group, cube in units:
            counts[(group,) + cube] += 1
        return relevance / counts

    def _bounded(self, network, inputs, target, units, work, progress, should_cancel) -> torch.Tensor:
        """Drops (n, K_t) of the occluded copies, each run on the crop its receptive field bounds."""
        baseline = self.params["baseline"]

        def occlude(copies, ids, crops):
            for j, (i, crop) in enumerate(zip(ids, crops)):
                group, cube = units[i]
                copies[(j, group) + tuple(slice(c.start - k.start, c.stop - k.start) for c, k in zip(cube, crop))] = baseline

        boxes = [cube for _, cube in units]
        largest = max(boxes, key=lambda box: math.prod(b.stop - b.start for b in box))
        with held_normalisation(network, inputs):
            batch = crop_batch(network, inputs, self._reach, work, largest, len(units), self.params["batch_size"])
            return bounded_drops(network, inputs, target, boxes, occlude, self._reach, work, batch, progress,
                                 should_cancel, fixed_batches=bool(self.params["batch_size"]))

    def _whole(self, network, inputs, target, units, progress, should_cancel) -> torch.Tensor:
        """Drops (n, K_t) of the occluded copies, each run whole, in batches."""
        n = len(units)
        batch = samples_per_batch(network, inputs, n, self.params["batch_size"], with_gradients=False)
        if self.params["batch_size"]:
            batch_slices = (slice(s, min(s + batch, n)) for s in range(0, n, batch))
        else:  # batches sized to about PACE_SECONDS each: the bar moves and Cancel is heard
            batch_slices = _progress.paced(n, batch, progress, should_cancel)
        drops = inputs.new_zeros((n, len(target.classes)))
        with torch.no_grad():
            reference = target.scalars(network(inputs))[0]
            for part in batch_slices:
                _progress.step(part.start, n, progress, should_cancel)
                chunk = units[part]
                occluded = inputs.repeat(len(chunk), *([1] * (inputs.ndim - 1)))
                for i, (group, cube) in enumerate(chunk):
                    occluded[(i, group) + cube] = self.params["baseline"]
                drops[part] = reference - target.scalars(network(occluded))
        _progress.step(n, n, progress, None)
        return drops
