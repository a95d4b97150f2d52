"""The cost of explaining a case, estimated before the work from one timed pass of a real window or crop."""

from __future__ import annotations

from typing import Sequence

import torch

from .base import AttributionMethod, frozen_parameters
from .case_grid import _roi, target_crop
from .cost import Cost, Speed, estimate, measure_speed
from .slicewise import SliceWise
from .targets import Target
from .windows import target_windows, window_slices


def estimate_case(method: AttributionMethod, members: Sequence[torch.nn.Module], image: torch.Tensor, goal: Target,
                  card, margin: int | None, sequences: bool = False) -> tuple[AttributionMethod, Cost]:
    """The method with its automatic settings chosen for this device, and the cost of explaining ``goal``.

    ``image`` and ``goal`` are explain_case's (padded, on the model's grid). The pass is timed on
    what the method will really run: the first window that meets the target for methods additive
    over windows (times the windows that meet it), else the crop around the target. ``sequences``
    adds the sequences' exact Shapley values; an ensemble costs its members' sum.
    """
    from .modality_shapley import ModalityShapley

    network = members[0]
    model = network if card.spatial_dims == 3 else SliceWise(network, card.slice_axis)
    speeds: dict[tuple, Speed] = {}

    def cost_of(m: AttributionMethod) -> tuple[AttributionMethod, Cost]:
        sample, local, windows = _sample(m, image, goal, card, margin)
        shape = tuple(sample.shape)
        speed = speeds.get((shape, True)) or speeds.get((shape, m.backpropagates))
        if speed is None:
            speed = speeds[(shape, m.backpropagates)] = measure_speed(model, sample, local, m.backpropagates)
        return estimate(m, model, sample, local, windows, speed)

    with frozen_parameters(network), torch.no_grad():
        settled, cost = cost_of(method)
        if sequences and method.name != ModalityShapley.name:
            cost = cost + cost_of(ModalityShapley())[1]
    return settled, cost.times(len(members)) if len(members) > 1 else cost


def _sample(method: AttributionMethod, image: torch.Tensor, goal: Target, card, margin):
    """What one pass of ``method`` sees: (the input, its target, how many such inputs the explanation runs)."""
    if method.windowable:
        windows = target_windows(window_slices(tuple(image.shape[2:]), _roi(card, image), card.overlap), goal)
        window = windows[0]
        masks = goal.masks[(slice(None),) + tuple(window)]
        present = [k for k in range(len(goal.classes)) if masks[k].any()]   # as windowed_attribute: classes in the window
        local = Target(goal.kind, tuple(goal.classes[k] for k in present), masks[present], goal.threshold, goal.output,
                       goal.activation)
        return image[(slice(None), slice(None)) + tuple(window)], local, len(windows)
    crop, local, _, _ = target_crop(image, goal, card, margin)
    return crop, local, 1
