"""Test helper: tiny cards whose network never predicts some classes (not product code)."""

from __future__ import annotations

from pathlib import Path

from _cards import TINY_CARD, write_card

OUTPUT_BIAS = "model.2.conv.bias"  # the last layer of the tests' two-level MONAI UNets


def silence_classes(weights: Path, indices) -> Path:
    """Set the output bias of each class index in ``indices`` to -1000 in a tiny UNet's weights: never predicted."""
    from napari_segxai.core.model.weights import load_state_dict, save_state_dict

    state = load_state_dict(weights)
    bias = state[OUTPUT_BIAS].clone()
    for index in indices:
        bias[index] = -1000.0
    state[OUTPUT_BIAS] = bias
    return save_state_dict(state, weights)


def write_silent_card(folder: Path, silent=("core",), **overrides) -> Path:
    """A tiny card (``write_card``) whose ``silent`` classes (by name) are never predicted."""
    path = write_card(folder, **overrides)
    names = [c["name"] for c in overrides.get("classes", TINY_CARD["classes"])]
    silence_classes(folder / "weights.safetensors", [names.index(name) for name in silent])
    return path
