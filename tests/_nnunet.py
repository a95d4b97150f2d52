"""Test helper: a real nnU-Net v2 model, planned and trained by nnU-Net's own commands on toy generated cases.

``nnUNetv2_plan_and_preprocess`` and ``nnUNetv2_train ... -tr nnUNetTrainer_1epoch -device cpu`` run for
folds 0 and 1 (about three minutes each on 2 cores); the result is the folder nnU-Net writes,
``nnUNet_results/Dataset555_SegxaiToy/nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres``. Built once per
test session (or kept in ``$SEGXAI_TEST_CACHE`` between sessions), never downloaded. Not product code.

One epoch teaches nnU-Net little, and unseeded it learns something different each time: one CI run's
fold 0 found no tumour at all in the held-out case. So training is seeded, with the augmentation in the
training process (``nnUNet_n_proc_DA=0`` for training; a worker process would draw its own random
numbers), and the held-out case is the first generated case in which every fold, and the ensemble,
finds oedema: the tests explain what the model segmented, so the model has to segment something.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _datasets import write_nnunet_dataset

DATASET = "Dataset555_SegxaiToy"
TRAINER = "nnUNetTrainer_1epoch"
FOLDS = ("0", "1")
TRAINING_SEEDS = range(1000, 1008)
HELD_OUT_SEEDS = range(1100, 1112)
TRAINING_SEED = 0
#: A held-out case must show this many oedema voxels under every fold and the ensemble (of about 14,000).
MIN_EDEMA_VOXELS = 20
#: ``nnUNetv2_train`` seeded: nnU-Net draws its patches and augmentations from these generators.
SEEDED_TRAIN = ("import random, sys, numpy, torch; random.seed({seed}); numpy.random.seed({seed}); "
                "torch.manual_seed({seed}); from nnunetv2.run.run_training import run_training_entry; "
                "sys.argv[0] = 'nnUNetv2_train'; run_training_entry()")


@dataclass(frozen=True)
class NnunetModel:
    root: Path  # holds raw/, preprocessed/, results/
    folder: Path  # the trained-model folder
    raw: Path  # the raw dataset it was trained on
    case: Path  # a held-out case folder (t1, t1ce, t2, flair NIfTI files)

    def env(self) -> dict:
        return nnunet_env(self.root)


def nnunet_env(root: Path) -> dict:
    return dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
                nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="1", nnUNet_compile="f",
                nnUNet_def_n_proc="1")


def _run(command: list[str], env: dict, log: Path) -> None:
    with open(log, "a") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed; its log: {log}\n" + log.read_text()[-3000:])


def build_nnunet_model(root: Path) -> NnunetModel:
    """The toy nnU-Net model under ``root`` (built there when missing)."""
    from napari_segxai.core.io.nifti import save_nifti

    folder = root / "results" / DATASET / f"{TRAINER}__nnUNetPlans__3d_fullres"
    raw = root / "raw" / DATASET
    case_dir = root / "held_out"
    model = NnunetModel(root, folder, raw, case_dir)
    if all((folder / f"fold_{f}" / "checkpoint_final.pth").is_file() for f in FOLDS) and case_dir.is_dir():
        return model
    shutil.rmtree(root, ignore_errors=True)
    for part in ("raw", "preprocessed", "results"):
        (root / part).mkdir(parents=True)
    write_nnunet_dataset(raw, TRAINING_SEEDS, prefix="TOY")
    env, log, bin_dir = nnunet_env(root), root / "nnunet.log", Path(sys.executable).parent
    _run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", "555", "-c", "3d_fullres", "-np", "1",
          "--verify_dataset_integrity"], env, log)
    for fold in FOLDS:
        _run([sys.executable, "-c", SEEDED_TRAIN.format(seed=TRAINING_SEED), "555", "3d_fullres", fold,
              "-tr", TRAINER, "-device", "cpu"], dict(env, nnUNet_n_proc_DA="0"), log)
    held_out = _segmented_case(folder)
    case_dir.mkdir()
    for name, channel in zip(held_out.modalities, held_out.channels):
        save_nifti(channel, held_out.affine, case_dir / f"toy_{name}.nii.gz")
    return model


def _segmented_case(folder: Path):
    """The first generated held-out case in which each fold (with and without mirroring) and the ensemble
    predict at least MIN_EDEMA_VOXELS oedema voxels."""
    from napari_segxai.core.model.inference import segment
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.training.synth import generate_case

    cards = [load_model_card(folder)] + [load_model_card(folder, folds=[f], mirroring=m)
                                         for f in FOLDS for m in (False, True)]
    edema = cards[0].classes[cards[0].class_names.index("edema")].label
    found = []
    for seed in HELD_OUT_SEEDS:
        case = generate_case(seed, size="toy").case
        counts = [int((segment(case, card, device="cpu").labels == edema).sum()) for card in cards]
        if min(counts) >= MIN_EDEMA_VOXELS:
            return case
        found.append(f"seed {seed}: {counts}")
    raise RuntimeError(f"The toy nnU-Net model under {folder} finds too little oedema (fewer than "
                       f"{MIN_EDEMA_VOXELS} voxels under some fold) in every candidate held-out case: "
                       + "; ".join(found))
