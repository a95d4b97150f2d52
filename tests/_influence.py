"""Test helpers for TracIn: a tiny model with hand-made checkpoints and training manifest (not product code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

TOY_KWARGS = {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "channels": [4, 8], "strides": [2], "num_res_units": 0}
CLASSES = [
    {"name": "background", "label": 0, "color": "#000000"},
    {"name": "necrosis", "label": 1, "color": "#e6194b"},
    {"name": "edema", "label": 2, "color": "#3cb44b"},
    {"name": "enhancing", "label": 4, "color": "#ffe119"},
]
SEEDS = (61, 62, 63)
LRS = (0.01, 0.004, 0.001)


def toy_model(folder: Path, *, seeds=SEEDS, lrs=LRS, training: bool = True, spatial_dims: int = 3) -> Path:
    """Card, final weights, len(lrs) perturbed checkpoints and a manifest for toy cases; returns the card path."""
    from napari_segxai.core.model.architectures import create_network
    from napari_segxai.core.training.synth import GENERATOR_VERSION
    from napari_segxai.core.model.weights import save_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    kwargs = dict(TOY_KWARGS, spatial_dims=spatial_dims)
    torch.manual_seed(3)
    network = create_network("UNet", kwargs)
    checkpoints = []
    (folder / "training" / "checkpoints").mkdir(parents=True, exist_ok=True)
    for i, lr in enumerate(lrs):
        with torch.no_grad():
            for p in network.parameters():
                p.add_(0.05 * torch.randn_like(p))
        last = i == len(lrs) - 1
        path = folder / ("weights.safetensors" if last else f"training/checkpoints/step-{10 * (i + 1):06d}.safetensors")
        save_state_dict(network.state_dict(), path)
        checkpoints.append({"step": 10 * (i + 1), "path": "../weights.safetensors" if last else f"checkpoints/{path.name}",
                            "lr": lr, "loss": 1.0, "seconds": 1.0, "cases_in_pool": len(seeds)})
    manifest = {
        "format": "segxai-training/1", "name": "toy", "architecture": "UNet", "kwargs": kwargs,
        "spatial_dims": spatial_dims, "slice_axis": 2 if spatial_dims == 2 else None,
        "modalities": ["t1", "t1ce", "t2", "flair"], "classes": [{"name": c["name"], "label": c["label"]} for c in CLASSES],
        "label_to_index": {"0": 0, "1": 1, "2": 2, "4": 3},
        "loss": {"name": "DiceCELoss", "kwargs": {"to_onehot_y": True, "softmax": True}},
        "training_set": {"generator": "napari_segxai.core.training.synth.generate_case", "generator_version": GENERATOR_VERSION,
                         "size": "toy", "seeds": list(seeds), "joined_at_step": [0] * len(seeds)},
        "checkpoints": checkpoints,
    }
    (folder / "training" / "manifest.json").write_text(json.dumps(manifest))
    card = {
        "name": "toy-tracin", "description": "a toy model with hand-made checkpoints", "architecture": "UNet",
        "kwargs": kwargs, "weights": "weights.safetensors", "trusted": False, "spatial_dims": spatial_dims,
        "modalities": ["t1", "t1ce", "t2", "flair"], "classes": CLASSES, "activation": "softmax",
        "preprocessing": {"orientation": "RAS", "spacing": None, "spacing_policy": "resample", "normalization": "zscore_nonzero"},
        "inference": {"roi_size": [16, 16, 16] if spatial_dims == 3 else [16, 16], "overlap": 0.25, "sw_batch_size": 1,
                      "mode": "gaussian"},
    }
    if spatial_dims == 2:
        card["slice_axis"] = 2
    if training:
        card["training"] = "training/manifest.json"
    (folder / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return folder / "card.yaml"


def blob_case(shape=(16, 16, 16), name="blobs"):
    """A hand-made four-channel case: two bright blobs in a dim box, labelled 2 and 4."""
    from napari_segxai.core.case import Case
    from napari_segxai.core.training.synth import BRATS_124

    rng = np.random.default_rng(5)
    grid = np.indices(shape).astype(np.float32)
    label = np.zeros(shape, np.int16)
    label[((grid - 5) ** 2).sum(0) < 9] = 2
    label[((grid - 11) ** 2).sum(0) < 6] = 4
    channels = 0.2 * rng.standard_normal((4,) + shape).astype(np.float32) + 1.0
    channels[2][label == 2] += 2.0
    channels[1][label == 4] += 3.0
    return Case(channels, ("t1", "t1ce", "t2", "flair"), np.diag([2.0, 2.0, 2.0, 1.0]), label, BRATS_124, (), name)


def files_model(folder: Path, *, seeds=SEEDS) -> tuple[Path, Path]:
    """:func:`toy_model` whose training set is recorded as files (toy case folders with their SHA-256); card, data root."""
    from _datasets import write_case_folders
    from napari_segxai.core.io.files import file_digest
    from napari_segxai.core.training.synth import case_name

    card = toy_model(folder, seeds=seeds)
    data = write_case_folders(folder / "data", seeds)
    modalities = ["t1", "t1ce", "t2", "flair"]
    cases = []
    for seed in seeds:
        name = case_name(seed, "toy")
        files = [f"{name}/{name}_{m}.nii.gz" for m in modalities + ["seg"]]
        cases.append({"name": name, "images": files[:-1], "label": files[-1],
                      "sha256": {f: file_digest(data / f) for f in files}})
    path = folder / "training" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["training_set"] = {"kind": "files", "format": "folders", "root": str(data.resolve()),
                                "modalities": modalities, "labels": {c["name"]: c["label"] for c in CLASSES},
                                "cases": cases}
    path.write_text(json.dumps(manifest))
    return card, data
