"""The training record of an nnU-Net v2 model, read from what nnU-Net keeps (no segxai manifest needed).

- **Checkpoints**: every ``checkpoint_*.pth`` of the explained fold (``checkpoint_final``,
  ``checkpoint_best`` and any the user saved), read safely; two of the same epoch count once (final
  kept). The learning rate of each is the one nnU-Net logged for that epoch (``logging['lrs']``,
  its poly schedule), else the poly schedule itself from the plans' initial rate.
- **Cases**: the fold's training cases, from ``$nnUNet_preprocessed/<dataset>/splits_final.json``
  when it is there, else nnU-Net's own default split (``generate_crossval_split``, seed 12345, five
  folds, over the sorted case names); the files from the raw dataset (``--training-data DIR``, the
  card's ``training_data``, else ``$nnUNet_raw/<dataset>``).

nnU-Net records no digest of its training files, so a file changed since training cannot be
detected for these models. An ensemble is traced through its first fold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .record import FILES, Checkpoint, NoTrainingRecord, RecordedCase, TrainingRecord

#: nnU-Net's poly schedule exponent and default initial learning rate.
POLY_EXPONENT, INITIAL_LR = 0.9, 1e-2


def nnunet_checkpoints(fold_dir: Path, trusted: bool) -> tuple[Checkpoint, ...]:
    """The fold's checkpoints in epoch order, each with its epoch's learning rate."""
    from ..model.nnunet import read_checkpoint

    by_epoch: dict[int, Checkpoint] = {}
    for path in sorted(fold_dir.glob("checkpoint_*.pth"), key=lambda p: p.name != "checkpoint_final.pth"):
        content = read_checkpoint(path, trusted)
        epoch = int(content.get("current_epoch", 0))
        if epoch in by_epoch:
            continue  # final first: a best checkpoint of the same epoch holds the same update
        lrs = (content.get("logging") or {}).get("lrs") or []
        if 0 < epoch <= len(lrs):
            lr = float(lrs[epoch - 1])
        else:
            epochs = int((content.get("init_args") or {}).get("num_epochs", 1000) or 1000)
            lr = INITIAL_LR * (1 - min(epoch - 1, epochs - 1) / epochs) ** POLY_EXPONENT
        by_epoch[epoch] = Checkpoint(path, lr, epoch)
    if not by_epoch:
        raise NoTrainingRecord(f"nnU-Net fold {fold_dir} holds no checkpoint_*.pth, so TracIn has nothing to trace.")
    return tuple(by_epoch[e] for e in sorted(by_epoch))


def _raw_dataset(card, dataset_name: str) -> Path:
    if card.training_data is not None:
        return Path(card.training_data)
    raw = os.environ.get("nnUNet_raw")
    if raw and (Path(raw) / dataset_name).is_dir():
        return Path(raw) / dataset_name
    raise NoTrainingRecord(
        f"The training data of nnU-Net model {card.name} ({dataset_name}) was not found: give its raw dataset folder "
        f"(nnUNet_raw/{dataset_name}) with --training-data DIR, or set nnUNet_raw."
    )


def _training_names(dataset_name: str, fold: str, names: list[str]) -> set[str]:
    """The fold's training case names: nnU-Net's splits_final.json, else its default five-fold split."""
    if fold == "all":
        return set(names)
    preprocessed = os.environ.get("nnUNet_preprocessed")
    splits_file = Path(preprocessed) / dataset_name / "splits_final.json" if preprocessed else None
    if splits_file is not None and splits_file.is_file():
        splits = json.loads(splits_file.read_text(encoding="utf-8"))
    else:
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        splits = generate_crossval_split(sorted(names), seed=12345, n_splits=5)
    if int(fold) >= len(splits):
        raise NoTrainingRecord(f"Fold {fold} is not in the dataset's {len(splits)}-fold split.")
    return set(splits[int(fold)]["train"])


def nnunet_record(card) -> TrainingRecord:
    """The :class:`TrainingRecord` of the nnU-Net model of ``card`` (its first fold)."""
    from ..training.datasets import open_dataset

    source = card.source
    if card.activation != "softmax":
        raise NoTrainingRecord(f"Model {card.name} is trained on regions (sigmoid outputs); TracIn here traces "
                               "label-based nnU-Net models only.")
    fold = source.folds[0]
    fold_dir = source.folder / f"fold_{fold}"
    checkpoints = nnunet_checkpoints(fold_dir, card.trusted)
    dataset_name = str(source.plans.get("dataset_name", source.folder.parent.name))
    root = _raw_dataset(card, dataset_name)
    dataset = open_dataset(root)
    chosen = _training_names(dataset_name, fold, [c.name for c in dataset.cases])
    cases = tuple(RecordedCase(c.name, images=tuple(dataset.relative(p) for p in c.images),
                               label=dataset.relative(c.label))
                  for c in dataset.cases if c.name in chosen)
    if not cases:
        raise NoTrainingRecord(f"None of fold {fold}'s training cases is in {root}; give the raw dataset the model "
                               "was trained on with --training-data DIR.")
    return TrainingRecord(
        manifest=fold_dir / checkpoints[-1].path.name, checkpoints=checkpoints, kind=FILES, cases=cases, size="",
        generator_version=0, label_to_index={c.label: i for i, c in enumerate(card.classes)},
        architecture=card.architecture, kwargs=dict(card.kwargs), root=root, modalities=dataset.modalities,
        labels=dict(dataset.labels),
    )
