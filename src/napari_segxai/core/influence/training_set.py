"""The training record of a model card (checkpoints, learning rates, cases) and the training cases, regenerated."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard

NO_RECORD = "This model has no recorded checkpoints; train it with `segxai train` to record them."


class NoTrainingRecord(ValueError):
    """The model card has no training record (checkpoints and learning rates), so TracIn cannot run."""

    def __init__(self, message: str = NO_RECORD):
        super().__init__(message)


@dataclass(frozen=True)
class Checkpoint:
    """One recorded checkpoint: its weights file and the learning rate of the update before it."""

    path: Path
    lr: float
    step: int


@dataclass(frozen=True)
class TrainingRecord:
    """What TracIn needs from a training manifest."""

    manifest: Path
    checkpoints: tuple[Checkpoint, ...]
    seeds: tuple[int, ...]
    size: str
    generator_version: int
    label_to_index: dict
    architecture: str
    kwargs: dict

    @property
    def folder(self) -> Path:
        """The manifest's folder (``<model>/training``)."""
        return self.manifest.parent


def training_record(card: ModelCard) -> TrainingRecord:
    """The training record of ``card``; :class:`NoTrainingRecord` when it has none or no usable checkpoints."""
    from ..io.manifest import read_manifest

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
    if not training_set.get("seeds"):
        raise NoTrainingRecord("This model's training record lists no training cases; train it with `segxai train` to record them.")
    return TrainingRecord(
        manifest=Path(card.training).resolve(),
        checkpoints=tuple(checkpoints),
        seeds=tuple(int(s) for s in training_set["seeds"]),
        size=str(training_set.get("size", "full")),
        generator_version=int(training_set.get("generator_version", 1)),
        label_to_index={int(k): int(v) for k, v in manifest.get("label_to_index", {}).items()},
        architecture=str(manifest["architecture"]),
        kwargs=dict(manifest["kwargs"]),
    )


def check_generator(record: TrainingRecord) -> None:
    """ValueError when the installed case generator is not the version the training cases were made with."""
    from ..training.synth import GENERATOR_VERSION

    if record.generator_version != GENERATOR_VERSION:
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


def training_case(card: ModelCard, seed: int) -> Case:
    """Training case ``seed`` of ``card``'s training set, regenerated once and cached as a case folder."""
    from ..io.nifti import load_case
    from ..training.synth import generate_case
    from ..io.generated_cases import write_case

    record = training_record(card)
    seed = int(seed)
    if seed not in record.seeds:
        raise ValueError(f"Seed {seed} is not one of the {len(record.seeds)} training cases of {card.name}; choose a recorded seed.")
    check_generator(record)
    name = f"synth-{seed:08d}" if record.size == "full" else f"synth-{record.size}-{seed:08d}"
    folder = _cases_folder(record.size, record.generator_version) / name
    if not (folder / "ground_truth.json").is_file():
        synth = generate_case(seed, size=record.size)
        try:
            write_case(synth, folder)
        except (ValueError, OSError):
            if not (folder / "ground_truth.json").is_file():  # written meanwhile by another process, or no cache
                return synth.case
    return load_case(folder)


#: A file whose status changed less than this long ago is hashed every time (a rewrite within one
#: timestamp tick would leave its size, mtime and ctime unchanged; the same rule as git's "racy" files).
SETTLED_NS = 2_000_000_000


def file_digest(path: Path, _memo: dict = {}) -> str:  # noqa: B006 (a deliberate per-process memo)
    """SHA-256 of a file's bytes, remembered per (device, inode, size, mtime, ctime) once the file has settled."""
    stat = os.stat(path)
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key in _memo:
        return _memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if time.time_ns() - stat.st_ctime_ns > SETTLED_NS:
        _memo[key] = digest.hexdigest()
    return digest.hexdigest()
