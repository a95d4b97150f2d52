"""Test helper: a MONAI bundle written with monai.bundle's tools around a small 3D UNet (not product code)."""

from __future__ import annotations

from pathlib import Path

import torch

CHANNELS = {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}  # the BraTS bundle's order, not the case's
CLASSES = {"0": "background", "1": "necrosis", "2": "edema", "3": "enhancing"}
NETWORK = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 4, "out_channels": 4, "channels": [8, 16, 32],
           "strides": [2, 2], "num_res_units": 1}


def inference_config(**changes) -> dict:
    config = {
        "bundle_root": ".",
        "network_def": dict(NETWORK),
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True},
        ]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [24, 24, 24], "sw_batch_size": 2, "overlap": 0.5,
                    "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        ]},
    }
    config.update(changes)
    return config


def write_bundle(root: Path, *, seed: int = 0, config: dict | None = None) -> Path:
    """``root`` as a bundle: configs/inference.json, configs/metadata.json, models/model.pt (random weights)."""
    from monai.bundle import ConfigParser
    from monai.networks.nets import UNet

    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    ConfigParser.export_config_file(config or inference_config(), str(root / "configs" / "inference.json"), indent=1)
    metadata = {
        "version": "0.1.0", "monai_version": "1.6.1", "task": "toy brain tumour segmentation", "name": "toy_bundle",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 4, "channel_def": CHANNELS}},
            "outputs": {"pred": {"type": "image", "num_channels": 4, "channel_def": CLASSES}},
        },
    }
    ConfigParser.export_config_file(metadata, str(root / "configs" / "metadata.json"), indent=1)
    torch.manual_seed(seed)
    network = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root
