"""Activation maximisation on a case: one window of the network's grid around the class, back on the case grid.

The optimised window is cut from the preprocessed case (or from a neutral brain of the case's shape)
around the voxels the network predicts as the class (around the predicted tumour, else the head,
for a channel); slice-wise cards optimise the slice holding most of that region. The result is the
start volume with the optimised window in place, mapped back to the case grid in the network's
normalised intensities, so it lies beside the case in the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .. import progress as _progress
from ..attribution.case_grid import crop_box
from ..model.card import build_network
from ..model.device import pick_device
from ..model.inference import infer, silent_voxels
from ..model.preprocess import preprocess
from .features import class_masks
from .layers import find_layer
from .maximise import Maximised, channel_objective, class_objective, maximise, neutral_start, sequence_bounds
from .windowed import as_stack, from_stack

STARTS = ("case", "neutral")


@dataclass(frozen=True, eq=False)
class CaseMaximised:
    """A maximised input on the case grid (C, *case) with its affine, channel names and the optimisation's numbers."""

    result: Maximised
    volume: np.ndarray
    affine: np.ndarray
    channel_names: tuple[str, ...]
    start: str
    window: tuple[tuple[int, int], ...]   # the optimised window on the network grid (start, stop) per axis

    def record(self) -> dict:
        """The numbers as plain JSON."""
        r = self.result
        return {"objective": r.objective, "start": self.start, "start_value": round(r.start_value, 6),
                "value": round(r.value, 6), "steps": r.steps, "seconds": round(r.seconds, 3),
                "bounds": np.round(r.bounds, 4).tolist(), "window": [list(w) for w in self.window]}


def class_index(card, name: str) -> int:
    """The output index of the class called ``name`` (or given by its label value); a ValueError naming the choices."""
    names = list(card.class_names)
    if name in names:
        return names.index(name)
    values = [str(v) for v in card.label_values]
    if str(name) in values:
        return values.index(str(name))
    raise ValueError(f"The model has no class {name!r}; choose one of {', '.join(names)}.")


def maximise_case(
    case,
    card,
    *,
    class_name: Optional[str] = None,
    layer: Optional[str] = None,
    channel: Optional[int] = None,
    start: str = "case",
    network: Optional[torch.nn.Module] = None,
    device=None,
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
    **options,
) -> CaseMaximised:
    """Maximise a class's region logit (``class_name``) or a layer's channel (``layer`` and ``channel``) on ``case``.

    ``options`` go to :func:`.maximise.maximise` (steps, learning_rate, tv, blur_sigma, blur_every, jitter, seed).
    """
    if start not in STARTS:
        raise ValueError(f"Unknown start {start!r}; start from the case or from a neutral brain ({', '.join(STARTS)}).")
    if (class_name is None) == (layer is None):
        raise ValueError("Maximise either a class (give its name) or a layer's channel (give the layer and channel).")
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    if layer is not None:
        find_layer(network, layer)
        if channel is None or int(channel) < 0:
            raise ValueError(f"Give the channel of layer {layer!r} to maximise (0 or more).")
    image, grid = preprocess(case, card, device=device)
    head = ~torch.as_tensor(silent_voxels(image[0]), device=image.device)
    with torch.no_grad():
        logits = infer(image, card, network, progress=None, should_cancel=should_cancel)[0].float()
    masks = class_masks(logits, card.activation) & head
    if class_name is not None:
        k = class_index(card, class_name)
        region = masks[k]
        if not bool(region.any()):
            raise ValueError(f"No {card.class_names[k]} is predicted on case {case.name}, so it has no region logit to "
                             "maximise; choose a class the model finds here.")
    else:
        foreground = [k for k, v in enumerate(card.label_values) if v != 0] or list(range(masks.shape[0]))
        region = masks[foreground].any(0)
        region = region if bool(region.any()) else head
    origin = neutral_start(image, head) if start == "neutral" else image
    stack, regions = as_stack(origin, card), as_stack(region[None, None], card)[:, 0]
    index = int(regions.flatten(1).sum(1).argmax()) if stack.shape[0] > 1 else 0  # a 2D card: the fullest slice
    region_np = regions[index].cpu().numpy()
    source, inside, sizes = crop_box(region_np, card.roi_size, margin=0)
    crop = stack.new_zeros((1, stack.shape[1]) + tuple(sizes))
    crop[(0, slice(None)) + inside] = stack[(index, slice(None)) + source]
    bounds = sequence_bounds(image, head)
    if class_name is not None:
        local = np.zeros(sizes, dtype=bool)
        local[inside] = region_np[source]
        objective, name = class_objective(k, local, len(card.classes), card.activation), \
            f"class {card.class_names[k]}: mean logit over its predicted region"
    else:
        objective, name = channel_objective(layer, int(channel)), f"layer {layer} channel {int(channel)}: centre unit"
    result = maximise(network, crop, objective, name=name, layer=layer, bounds=bounds, progress=progress,
                      should_cancel=should_cancel, **options)
    placed = stack.clone()
    placed[(index, slice(None)) + source] = torch.as_tensor(result.volume, device=stack.device)[(slice(None),) + inside]
    volume = np.asarray(grid.to_case_grid(from_stack(placed, card, image.ndim - 2).cpu()), dtype=np.float32)
    window = tuple((int(s.start), int(s.stop)) for s in source)
    return CaseMaximised(result=result, volume=volume,
                         affine=np.array(case.affine, dtype=float), channel_names=tuple(card.modalities),
                         start=start, window=window)
