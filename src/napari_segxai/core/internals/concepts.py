"""Concept relevance: how much of a class's LRP relevance passes through each channel of a layer
(in the spirit of concept relevance propagation, Achtibat et al. 2023).

The class's region logit (the relevance target: its logit on the voxels predicted as it) is the
starting relevance; zennit's rules (the project's LRP composite, :mod:`..attribution.lrp`) carry it back
to the chosen layer, where the relevance of channel c is sum over positions of a_c * (modified
gradient)_c, as zennit defines relevance at any layer. Channels are ranked by it; ``share`` is each
channel's part of the layer's total absolute relevance, so "which internal features drive oedema here"
links to the same channels' feature maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..attribution.case_grid import crop_box
from ..attribution.lrp import lrp_context, make_composite
from ..attribution.targets import Target, region_target
from ..model.card import build_network
from ..model.device import pick_device
from ..model.inference import infer, silent_voxels
from ..model.preprocess import preprocess
from .case_maximise import class_index
from .features import class_masks
from .layers import find_layer, recording
from .windowed import as_stack


@dataclass(frozen=True)
class ChannelRelevance:
    """Per channel of one layer, the LRP relevance of one class's region logit that passes through it."""

    layer: str
    class_name: str
    relevance: np.ndarray   # (C,) signed
    share: np.ndarray       # (C,) |relevance| / sum |relevance|

    def order(self) -> np.ndarray:
        """Channels, most relevant (largest positive relevance) first."""
        return np.argsort(-self.relevance, kind="stable")

    def rows(self, limit: Optional[int] = None) -> list[dict]:
        """The channels as plain records, most relevant first."""
        return [{"channel": int(c), "relevance": round(float(self.relevance[c]), 6),
                 "share": round(float(self.share[c]), 4)} for c in self.order()[:limit]]


def channel_relevance(network: torch.nn.Module, inputs: torch.Tensor, target: Target, layer: str,
                      composite: str = "epsilon_plus_flat") -> np.ndarray:
    """(K_t, C): LRP relevance of each target class's region logit at each channel of ``layer``."""
    find_layer(network, layer)
    rules = make_composite(network, inputs, composite, 1e-6, 0.25, False)
    rows = []
    with lrp_context(network, rules) as modified, recording(modified, [layer], detach=False) as recorded, \
            torch.enable_grad():
        x = inputs.clone().requires_grad_(True)
        output = modified(x)
        output = output[0] if isinstance(output, (list, tuple)) else output
        activation = recorded[layer]
        masks = target._mask_tensor(output.device, output.dtype)
        for k, c in enumerate(target.classes):
            start = torch.zeros_like(output)
            start[0, c] = output[0, c].detach() * masks[k]
            (gradient,) = torch.autograd.grad(output, activation, start, retain_graph=k < len(target.classes) - 1)
            rows.append((activation * gradient).detach().flatten(2).sum(-1)[0].cpu().numpy())
    return np.stack(rows)


def case_channel_relevance(case, card, layer: str, class_name: str, *, network: Optional[torch.nn.Module] = None,
                           device=None, should_cancel=None) -> ChannelRelevance:
    """Channel relevance of ``layer`` for ``class_name`` on one window of ``case`` around the class's predicted region."""
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    find_layer(network, layer)
    k = class_index(card, class_name)
    image, _ = preprocess(case, card, device=device)
    head = ~torch.as_tensor(silent_voxels(image[0]), device=image.device)
    with torch.no_grad():
        logits = infer(image, card, network, should_cancel=should_cancel)[0].float()
    region = class_masks(logits, card.activation)[k] & head
    if not bool(region.any()):
        raise ValueError(f"No {card.class_names[k]} is predicted on case {case.name}, so no relevance flows from it; "
                         "choose a class the model finds here.")
    stack, regions = as_stack(image, card), as_stack(region[None, None], card)[:, 0]
    index = int(regions.flatten(1).sum(1).argmax()) if stack.shape[0] > 1 else 0
    plane = regions[index].cpu().numpy()
    source, inside, sizes = crop_box(plane, card.roi_size, margin=0)
    crop = stack.new_zeros((1, stack.shape[1]) + tuple(sizes))
    crop[(0, slice(None)) + inside] = stack[(index, slice(None)) + source]
    local = np.zeros(sizes, dtype=bool)
    local[inside] = plane[source]
    target = region_target(local, k, len(card.classes), activation=card.activation)
    relevance = channel_relevance(network, crop, target, layer)[0]
    total = float(np.abs(relevance).sum())
    share = np.abs(relevance) / total if total > 0 else np.zeros_like(relevance)
    return ChannelRelevance(layer, card.class_names[k], relevance, share)
