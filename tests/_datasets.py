"""Test helpers: training datasets of real NIfTI files (nnU-Net v2 raw, Decathlon, case folders) written
from toy generated cases (not product code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: nnU-Net wants consecutive label values: BraTS 4 (enhancing) becomes 3, as nnU-Net's BraTS conversion does.
NNUNET_LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 3}
CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}


def _toy(seed: int):
    from napari_segxai.core.training.synth import generate_case

    return generate_case(seed, size="toy").case


def write_nnunet_dataset(root: Path, seeds, *, prefix: str = "BRATS", real=()) -> Path:
    """``root`` as an nnU-Net v2 raw dataset (imagesTr/CASE_000c.nii.gz, labelsTr/CASE.nii.gz, dataset.json).

    ``real`` adds cases of files elsewhere as links: (name, [t1, t1ce, t2, flair files], label file); their
    labels keep the BraTS values 1/2/4, so the dataset then declares 4 for enhancing, as BraTS does.
    """
    from napari_segxai.core.io.nifti import save_nifti

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        case = _toy(seed)
        name = f"{prefix}_{i:03d}"
        for c, channel in enumerate(case.channels):
            save_nifti(channel, case.affine, root / "imagesTr" / f"{name}_{c:04d}.nii.gz")
        label = case.label if real else np.where(case.label == 4, 3, case.label)
        save_nifti(label.astype(np.uint8), case.affine, root / "labelsTr" / f"{name}.nii.gz")
    for name, images, label in real:
        for c, image in enumerate(images):
            (root / "imagesTr" / f"{name}_{c:04d}.nii.gz").symlink_to(Path(image).resolve())
        (root / "labelsTr" / f"{name}.nii.gz").symlink_to(Path(label).resolve())
    labels = {**NNUNET_LABELS, "enhancing": 4} if real else NNUNET_LABELS
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": CHANNELS, "labels": labels, "numTraining": len(seeds) + len(real), "file_ending": ".nii.gz",
    }, indent=1))
    return root


def write_msd_dataset(root: Path, seeds) -> Path:
    """``root`` as a Medical Segmentation Decathlon dataset (one 4D image per case, channels last)."""
    from napari_segxai.core.io.nifti import save_nifti

    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i, seed in enumerate(seeds):
        case = _toy(seed)
        name = f"BRATS_{i:03d}.nii.gz"
        save_nifti(np.moveaxis(case.channels, 0, -1), case.affine, root / "imagesTr" / name)
        save_nifti(case.label.astype(np.uint8), case.affine, root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "toy", "modality": {"0": "T1w", "1": "t1gd", "2": "T2w", "3": "FLAIR"},
        "labels": {"0": "background", "1": "necrosis", "2": "edema", "4": "enhancing"},
        "numTraining": len(seeds), "training": training,
    }, indent=1))
    return root


def write_case_folders(root: Path, seeds) -> Path:
    """``root`` holding one BraTS-style case folder per seed (``<name>_t1.nii.gz`` ... ``<name>_seg.nii.gz``)."""
    from napari_segxai.core.io.nifti import save_nifti

    for seed in seeds:
        case = _toy(seed)
        folder = root / case.name
        folder.mkdir(parents=True, exist_ok=True)
        for modality, channel in zip(case.modalities, case.channels):
            save_nifti(channel, case.affine, folder / f"{case.name}_{modality}.nii.gz")
        save_nifti(case.label.astype(np.uint8), case.affine, folder / f"{case.name}_seg.nii.gz")
    return root
