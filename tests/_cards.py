"""Test helpers: tiny model cards written into a temporary folder (not product code)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import yaml

DELETE = object()

TINY_CARD = {
    "name": "tiny-unet",
    "description": "a two-level UNet for tests",
    "architecture": "UNet",
    "kwargs": {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8],
               "strides": [2], "num_res_units": 0},
    "weights": "weights.safetensors",
    "trusted": False,
    "spatial_dims": 3,
    "modalities": ["flair", "t1"],
    "classes": [
        {"name": "background", "label": 0, "color": "#000000"},
        {"name": "edema", "label": 2, "color": "#3cb44b"},
        {"name": "core", "label": 4, "color": "#ffe119"},
    ],
    "activation": "softmax",
    "preprocessing": {"orientation": "RAS", "spacing": [2.0, 2.0, 2.0], "spacing_policy": "resample",
                      "normalization": "zscore_nonzero"},
    "inference": {"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 2, "mode": "gaussian"},
}


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied (nested dicts merged, DELETE removes a key)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_card(folder: Path, *, save_weights: bool = True, filename: str = "card.yaml", **overrides) -> Path:
    """Write a tiny card (TINY_CARD with ``overrides``) and, for a UNet card, seeded random weights."""
    from napari_segxai.core.model.architectures import create_network
    from napari_segxai.core.model.weights import save_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    card = merged(TINY_CARD, overrides)
    weights = folder / str(card.get("weights", "weights.safetensors"))
    if save_weights and not weights.exists() and card.get("architecture") in ("UNet",):
        torch.manual_seed(0)
        save_state_dict(create_network(card["architecture"], card["kwargs"]).state_dict(), weights)
    path = folder / filename
    path.write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    return path


def lps_affine(spacing=(1.0, 1.0, 2.0), origin=(10.0, -20.0, 5.0)) -> np.ndarray:
    """An affine whose voxel axes run right-to-left, anterior-to-posterior, inferior-to-superior (LPS)."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin
    return affine


def permuted_affine() -> np.ndarray:
    """An oblique-free affine with permuted axes: voxel axis 0 runs P, 1 runs L, 2 runs S; spacing 1, 2, 1 mm."""
    affine = np.zeros((4, 4))
    affine[1, 0] = -1.0  # axis 0 -> posterior
    affine[0, 1] = -2.0  # axis 1 -> left
    affine[2, 2] = 1.0  # axis 2 -> superior
    affine[:3, 3] = (30.0, 12.0, -7.0)
    affine[3, 3] = 1.0
    return affine


def cyclic_affine() -> np.ndarray:
    """Axes in a 3-cycle: voxel axis 0 runs S (1 mm), 1 runs L (1 mm), 2 runs P (2 mm)."""
    affine = np.zeros((4, 4))
    affine[2, 0] = 1.0
    affine[0, 1] = -1.0
    affine[1, 2] = -2.0
    affine[:3, 3] = (-3.0, 40.0, 2.5)
    affine[3, 3] = 1.0
    return affine
