"""A model's checkpoints loaded once, the chosen layers, and gradients of an example at every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .gradients import DEFAULT_LAST_K, DEFAULT_LAYERS, example_gradients, layer_parameters, parametrised_layers, select_layers
from .regions import RegionExample, size_multiple
from .training_set import TrainingRecord, training_record


@dataclass(eq=False)
class TracInModel:
    """Everything a TracIn engine needs from a model card: final network, checkpoint weights, learning rates, layers."""

    card: object
    record: TrainingRecord
    network: torch.nn.Module          # the card's final weights: defines the regions
    gradient_network: torch.nn.Module  # receives each checkpoint's weights in turn
    states: list                       # state dicts, one per checkpoint
    learning_rates: tuple[float, ...]
    layers: str
    last_k: int
    layer_names: tuple[str, ...]
    parameters: int
    device: torch.device
    feature_layer: str = ""            # the last hidden layer is this module's input
    feature_size: int = 0

    def features(self, example: RegionExample) -> np.ndarray:
        """(K, F) last-hidden-layer features of the final network averaged over each class region of ``example``."""
        from .features import region_features

        return region_features(self.network, self.feature_layer, example, spatial_dims=self.card.spatial_dims,
                               slice_axis=self.card.slice_axis, size=self.feature_size)

    def gradients(self, example: RegionExample) -> torch.Tensor:
        """(T, K, D) gradients of every class region's loss of ``example`` at every checkpoint."""
        rows = []
        for state in self.states:
            self.gradient_network.load_state_dict(state)
            rows.append(example_gradients(
                self.gradient_network, self.layer_names, example, activation=self.card.activation,
                spatial_dims=self.card.spatial_dims, slice_axis=self.card.slice_axis,
            ))
        return torch.stack(rows)


def load_tracin_model(card, *, layers: str = DEFAULT_LAYERS, last_k: int = DEFAULT_LAST_K,
                      device: Optional[str | torch.device] = "cpu", record: Optional[TrainingRecord] = None) -> TracInModel:
    """The card's network, its recorded checkpoints and the chosen layers, ready for gradients."""
    from ..model.card import build_network
    from ..model.architectures import create_network
    from ..model.device import pick_device
    from ..model.weights import load_into, load_state_dict
    from .features import feature_size

    record = record or training_record(card)
    device = pick_device(device)
    network = build_network(card, device, member=0)  # an ensemble is traced through its first member
    gradient_network = create_network(record.architecture, record.kwargs, source=f"Training manifest {record.manifest}")
    gradient_network = gradient_network.to(device).eval()
    states = []
    for ckpt in record.checkpoints:
        state = load_state_dict(ckpt.path, trusted=card.trusted)  # the card's trust covers its checkpoints
        load_into(gradient_network, state, ckpt.path)  # checks that the checkpoint fits the network
        states.append({k: v.detach().clone() for k, v in gradient_network.state_dict().items()})
    side = 2 * size_multiple(card)
    probe = torch.zeros((1, len(card.modalities)) + (side,) * card.spatial_dims, device=device)
    names = select_layers(gradient_network, layers, last_k=last_k, probe=probe)
    feature_layer = parametrised_layers(network, probe)[-1]
    features = feature_size(network, feature_layer, probe)
    count = sum(p.numel() for p in layer_parameters(gradient_network, names))
    return TracInModel(
        card=card, record=record, network=network, gradient_network=gradient_network, states=states,
        learning_rates=tuple(c.lr for c in record.checkpoints), layers=layers, last_k=int(last_k),
        layer_names=names, parameters=int(count), device=device, feature_layer=feature_layer,
        feature_size=features,
    )
