"""The training record of a model card (checkpoints, learning rates, cases) and its training cases.

A training set is either generated cases (regenerated from their seeds) or a dataset of case
files (found under the recorded root, or where the card's ``training_data`` or ``--training-data``
says it moved, and refused when a file changed since training). Either way a training case is
known by its *key*: its seed for generated cases, its position in the recorded case list for files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .record import FILES, GENERATED, Checkpoint, NoTrainingRecord, RecordedCase, TrainingRecord

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard


class TrainingCaseUnavailable(ValueError):
    """A training case's files are not here: its TracIn scores (from the index) stand, its picture cannot be drawn."""

    def __init__(self, case_name: str, relative: str, root: Path):
        self.case_name, self.relative, self.root = case_name, relative, Path(root)
        super().__init__(f"Training case {case_name}: {relative} is not in {root}; if the dataset moved, give its "
                         "folder with --training-data DIR (or training_data in the model card).")

    def __reduce__(self):  # raised in an index-building worker process, re-raised here
        return type(self), (self.case_name, self.relative, self.root)


def unavailable_note(missing: Sequence[TrainingCaseUnavailable]) -> str:
    """Why some training evidence has no picture, in one sentence for all its cases ("" when none is missing)."""
    if not missing:
        return ""
    names = list(dict.fromkeys(err.case_name for err in missing))
    whose = f"{names[0]}'s files are" if len(names) == 1 else f"the files of {', '.join(names)} are"
    return (f"No picture: {whose} not in {missing[0].root}, so that evidence is listed without one (its TracIn "
            "scores come from the index); if the dataset moved, give its folder with --training-data DIR (or "
            "training_data in the model card).")


def training_record(card: ModelCard) -> TrainingRecord:
    """The training record of ``card``; :class:`NoTrainingRecord` when it has none or no usable checkpoints."""
    from ..io.manifest import read_manifest

    if getattr(card.source, "kind", None) == "nnunet" and card.training is None:  # what nnU-Net keeps
        from .nnunet_training import nnunet_record

        return nnunet_record(card)
    if card.training is None or not Path(card.training).is_file():
        raise NoTrainingRecord()
    manifest = read_manifest(card.training)
    checkpoints = []
    for ckpt in manifest.get("checkpoints") or []:
        if ckpt.get("lr") is None or not Path(ckpt["path"]).is_file():
            continue
        checkpoints.append(Checkpoint(Path(ckpt["path"]), float(ckpt["lr"]), int(ckpt.get("step", 0))))
    if not checkpoints:
        raise NoTrainingRecord()
    training_set = manifest["training_set"]
    kind = training_set.get("kind", GENERATED)
    if kind == GENERATED:
        from ..training.synth import case_name

        cases = tuple(RecordedCase(case_name(int(s), str(training_set.get("size", "full"))), seed=int(s))
                      for s in training_set.get("seeds") or [])
    else:
        cases = tuple(RecordedCase(c["name"], seed=int(c["seed"])) if "seed" in c else
                      RecordedCase(c["name"], images=tuple(c["images"]), label=c["label"], sha256=dict(c["sha256"]))
                      for c in training_set.get("cases") or [])
    if not cases:
        raise NoTrainingRecord("This model's training record lists no training cases; train it with `segxai train` "
                               "or record them with TrainingRecorder.")
    return TrainingRecord(
        manifest=Path(card.training).resolve(),
        checkpoints=tuple(checkpoints),
        kind=kind,
        cases=cases,
        size=str(training_set.get("size", "full")),
        generator_version=int(training_set.get("generator_version", 1)),
        label_to_index={int(k): int(v) for k, v in manifest.get("label_to_index", {}).items()},
        architecture=str(manifest["architecture"]),
        kwargs=dict(manifest["kwargs"]),
        root=Path(training_set["root"]) if training_set.get("root") else None,
        modalities=tuple(training_set.get("modalities") or manifest.get("modalities") or ()),
        labels={str(k): int(v) for k, v in (training_set.get("labels") or {}).items()},
    )


def checkpoint_meaning(count: int) -> str:
    """What the number of checkpoints means for a TracIn estimate, in one sentence."""
    if count == 1:
        return ("With one checkpoint TracIn is the gradient agreement at those weights only (TracIn-last): it says "
                "which training regions pull this prediction the same way now, not how training got there.")
    if count < 5:
        return (f"With {count} checkpoints TracIn follows training at {count} points only: a coarse estimate; "
                "save more checkpoints during training for a finer one.")
    return f"TracIn sums over {count} checkpoints along training."


def check_generator(record: TrainingRecord) -> None:
    """ValueError when the installed case generator is not the version the training cases were made with."""
    from ..training.synth import GENERATOR_VERSION

    generated = record.kind == GENERATED or any(c.seed is not None for c in record.cases)
    if generated and record.generator_version != GENERATOR_VERSION:
        raise ValueError(
            f"The training cases were generated with generator version {record.generator_version} but version "
            f"{GENERATOR_VERSION} is installed, so they cannot be regenerated; install the matching napari-segxai."
        )


#: Environment variable naming another folder for the regenerated training cases.
CASES_ENV = "SEGXAI_TRAINING_CASES"


def _cases_folder(size: str, version: int) -> Path:
    """Where regenerated training cases are cached (``$SEGXAI_TRAINING_CASES``, else the user cache folder)."""
    from ..io.cache import cache_dir

    root = Path(os.environ[CASES_ENV]).expanduser() if os.environ.get(CASES_ENV) else cache_dir() / "training-cases"
    return root / f"v{version}-{size}"


def training_case(card: ModelCard, key: int) -> Case:
    """Training case ``key`` of ``card``'s training set: regenerated once and cached, or read from its files."""
    record = training_record(card)
    recorded = record.case_of(key)
    if record.kind == FILES and recorded.seed is None:
        return _file_case(card, record, recorded)
    case = _generated_case(record, recorded)
    if record.kind == FILES:  # a generated case trained beside a dataset, in the dataset's label values
        from ..training.datasets import relabel_generated

        return dataclasses.replace(case, label=relabel_generated(case.label, record.labels, source=f"Model {card.name}"))
    return case


def _generated_case(record: TrainingRecord, recorded: RecordedCase) -> Case:
    """A recorded generated case, regenerated once and cached as a case folder."""
    from ..io.generated_cases import write_case
    from ..io.nifti import load_case
    from ..training.synth import generate_case

    check_generator(record)
    folder = _cases_folder(record.size, record.generator_version) / recorded.name
    if not (folder / "ground_truth.json").is_file():
        synth = generate_case(int(recorded.seed), size=record.size)
        try:
            write_case(synth, folder)
        except (ValueError, OSError):
            if not (folder / "ground_truth.json").is_file():  # written meanwhile by another process, or no cache
                return synth.case
    return load_case(folder)


def data_root(card: ModelCard, record: TrainingRecord) -> Path:
    """Where the training files are: the card's ``training_data`` (or ``--training-data``) when set, else the recorded root."""
    return Path(card.training_data) if card.training_data is not None else Path(record.root)


def _file_case(card: ModelCard, record: TrainingRecord, recorded: RecordedCase) -> Case:
    """A recorded training case read from its files, after checking that none changed since training.

    Raises :class:`TrainingCaseUnavailable` when a file is not there, ValueError when one changed.
    """
    from ..io.files import file_digest
    from ..io.nifti import case_from_files

    root = data_root(card, record)
    for relative in recorded.images + (recorded.label,):
        path = root / relative
        if not path.is_file():
            raise TrainingCaseUnavailable(recorded.name, relative, root)
        expected = recorded.sha256.get(relative)
        if expected is not None and file_digest(path) != expected:
            raise ValueError(f"Training case {recorded.name}: {relative} changed since the model was trained (its "
                             "SHA-256 differs), so its TracIn evidence would be about other data; restore the file.")
    return case_from_files(recorded.name, record.modalities, [root / r for r in recorded.images], root / recorded.label)
