"""What ``segxai inspect`` writes: NIfTI volumes with the case's affine, PNG montages and the JSON record's parts."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..io.files import write_text
from ..io.nifti import save_nifti
from ..io.relevance import safe_name
from .case_maximise import CaseMaximised
from .case_surrogate import CaseSurrogate
from .features import FeatureMaps
from .filters import kernel_montage, patch_montage, save_montage, strongest_patches
from .layers import LayerInfo, layer_tree
from .training_patches import TrainingPatches

#: Channels whose strongest input patches are drawn per layer, and patches per channel.
PATCH_CHANNELS = 3
PATCHES = 6


def probe(card) -> torch.Tensor:
    """A zero input of one sliding window of ``card`` (1, C, *roi_size): enough to trace the layers' output shapes."""
    return torch.zeros((1, len(card.modalities)) + tuple(int(r) for r in card.roi_size))


def card_layer_tree(card, network: torch.nn.Module) -> tuple[LayerInfo, ...]:
    """The layer tree of the card's network on one window of zeros."""
    device = next(iter(network.parameters()), torch.zeros(0)).device
    return layer_tree(network, probe(card).to(device))


def tree_record(tree: Sequence[LayerInfo]) -> list[dict]:
    """The layer tree as plain JSON."""
    return [{"name": layer.name, "type": layer.kind, "output_shape": None if layer.output_shape is None
             else list(layer.output_shape[1:]), "parameters": layer.parameters} for layer in tree]


def write_filters(kernels: np.ndarray, sequences: Sequence[str], case_name: str, out: Path) -> dict[str, str]:
    """One PNG montage of the first layer's kernels per input sequence (rows: output channels; tiles: kernel slices)."""
    return {sequence: str(save_montage(kernel_montage(kernels, i), out / f"{case_name}_filters_{safe_name(sequence)}.png"))
            for i, sequence in enumerate(sequences)}


def write_feature_maps(maps: FeatureMaps, case_name: str, out: Path, protected: Sequence[Path]) -> str:
    """The kept channels as one 4D NIfTI (channels last) with the case's affine."""
    path = out / f"{case_name}_features_{safe_name(maps.layer)}.nii.gz"
    return str(save_nifti(np.moveaxis(maps.maps, 0, -1), maps.affine, path, protected=protected))


def write_patches(maps: FeatureMaps, image: np.ndarray, case_name: str, out: Path) -> dict[str, str]:
    """For the most class-specific kept channels, a PNG of their strongest input patches (rows) per sequence (columns)."""
    written = {}
    for i, channel in enumerate(maps.channels[:PATCH_CHANNELS]):
        patches = strongest_patches(maps.maps[i], image, channel, count=PATCHES)
        path = out / f"{case_name}_patches_{safe_name(maps.layer)}_channel{channel}.png"
        written[str(channel)] = str(save_montage(patch_montage(patches), path, signed=False))
    return written


def write_training_patches(found: TrainingPatches, case_name: str, out: Path) -> dict:
    """Per channel, a PNG of its strongest training patches (rows, each labelled with its training case and response,
    in the order of the record's ``patches``) per sequence (columns); and the record."""
    entry = found.record()
    for channel in found.channels:
        if found.patches[channel]:
            path = out / f"{case_name}_training_patches_{safe_name(found.layer)}_channel{channel}.png"
            patches = found.patches[channel]
            entry["channels"][str(channel)]["file"] = str(save_montage(
                patch_montage(patches), path, signed=False, row_labels=[f"{p.case} {p.response:.3g}" for p in patches]))
    return entry


def feature_record(maps: FeatureMaps, file: str, patches: dict[str, str]) -> dict:
    """The feature maps' numbers as plain JSON."""
    return {"layer": maps.layer, "type": maps.kind, "channels": maps.n_channels, "kept": list(maps.channels),
            "file": file, "patches": patches, "windows": maps.windows, "seconds": round(maps.seconds, 3),
            "ranking": maps.stats.rows(), "notes": list(maps.notes)}


def write_maximised(done: CaseMaximised, case_name: str, label: str, out: Path, protected: Sequence[Path]) -> dict:
    """The maximised input as one 4D NIfTI (sequences last, the network's normalised intensities) and its numbers."""
    path = out / f"{case_name}_maximised_{safe_name(label)}.nii.gz"
    save_nifti(np.moveaxis(done.volume, 0, -1), done.affine, path, protected=protected)
    return {**done.record(), "sequences": list(done.channel_names), "file": str(path)}


def write_surrogate(done: CaseSurrogate, case_name: str, out: Path, protected: Sequence[Path]) -> dict:
    """The surrogate's labels as NIfTI (the card's label values), its rules as text, and its numbers."""
    stem = f"{case_name}_surrogate_{done.surrogate.kind}"
    labels = save_nifti(done.labels, done.affine, out / f"{stem}.nii.gz", protected=protected)
    rules = out / f"{stem}_rules.txt"
    write_text(rules, f"{done.surrogate.describe()}\n\n{done.surrogate.rules()}\n")
    return {**done.surrogate.record(), "file": str(labels), "rules_file": str(rules)}
