"""What a training record is: its checkpoints, its cases and where they are (no reading here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

NO_RECORD = "This model has no recorded checkpoints; train it with `segxai train` to record them."
GENERATED, FILES = "generated", "files"


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
class RecordedCase:
    """One training case of a record: its name and either its seed or its files (relative to the root) and digests."""

    name: str
    seed: Optional[int] = None
    images: tuple[str, ...] = ()
    label: Optional[str] = None
    sha256: dict = dataclasses.field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class TrainingRecord:
    """What TracIn needs from a training manifest."""

    manifest: Path
    checkpoints: tuple[Checkpoint, ...]
    kind: str                      # GENERATED or FILES
    cases: tuple[RecordedCase, ...]
    size: str
    generator_version: int
    label_to_index: dict
    architecture: str
    kwargs: dict
    root: Optional[Path] = None    # the dataset's folder when it was trained (FILES)
    modalities: tuple[str, ...] = ()
    labels: dict = dataclasses.field(default_factory=dict, hash=False)  # the dataset's {name: value} (FILES)

    @property
    def folder(self) -> Path:
        """The manifest's folder (``<model>/training``)."""
        return self.manifest.parent

    @property
    def seeds(self) -> tuple[int, ...]:
        """The key of every training case: its seed (generated) or its position in :attr:`cases` (files)."""
        if self.kind == GENERATED:
            return tuple(int(c.seed) for c in self.cases)
        return tuple(range(len(self.cases)))

    def case_of(self, key: int) -> RecordedCase:
        """The recorded case with ``key`` (ValueError when there is none)."""
        keys = self.seeds
        if int(key) not in keys:
            what = "seed" if self.kind == GENERATED else "case number"
            raise ValueError(f"{what.capitalize()} {key} is not one of the {len(keys)} training cases of this model; "
                             f"choose a recorded {what}.")
        return self.cases[keys.index(int(key))]

    def fingerprint(self) -> dict:
        """What identifies the training cases (for an index's cache key): seeds and generator, or names and digests."""
        if self.kind == GENERATED:
            return {"seeds": list(self.seeds), "size": self.size, "generator_version": self.generator_version}
        return {"cases": [[c.name, sorted(c.sha256.values())] for c in self.cases]}
