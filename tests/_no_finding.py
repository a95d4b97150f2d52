"""Test helper: a tiny card whose network never predicts some classes (not product code)."""

from __future__ import annotations

from pathlib import Path

from _cards import TINY_CARD, write_card


def write_silent_card(folder: Path, silent=("core",), **overrides) -> Path:
    """A tiny card (``write_card``) whose output bias for each ``silent`` class is -1000, so it is never predicted."""
    from napari_segxai.core.model.weights import load_state_dict, save_state_dict

    path = write_card(folder, **overrides)
    weights = folder / "weights.safetensors"
    state = load_state_dict(weights)
    names = [c["name"] for c in overrides.get("classes", TINY_CARD["classes"])]
    bias = state["model.2.conv.bias"].clone()
    for name in silent:
        bias[names.index(name)] = -1000.0
    state["model.2.conv.bias"] = bias
    save_state_dict(state, weights)
    return path
