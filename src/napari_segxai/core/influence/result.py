"""Typed results of a TracIn query: the per-class-pair score matrix and its proponents and opponents."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..io.files import write_text


@dataclass(frozen=True)
class Evidence:
    """One proponent or opponent: a class region of one training case and its TracIn score."""

    training_case: str                      # name of the training case (as generate_case names it, or the dataset)
    seed: int                               # its key: the seed of a generated case, else its number in the record
    train_class: str
    score: float
    centroid: tuple[int, ...]               # voxel of the region nearest its centre, on the training case's grid
    bbox: tuple[tuple[int, int], ...]       # (start, stop) per axis of the region on the training case's grid
    voxels: int = 0                         # size of the region
    key_name: str = "seed"                  # what ``seed`` is: "seed" or "case number"


@dataclass(frozen=True, eq=False)
class InfluenceResult:
    """TracIn scores of every (test class, training case, training class) triple, with where each region lies."""

    test_classes: tuple[str, ...]
    train_classes: tuple[str, ...]
    scores: np.ndarray                      # (K_test, N_train, K_train)
    training_cases: tuple[str, ...]
    seeds: tuple[int, ...]
    centroids: np.ndarray                   # (N_train, K_train, D) int, -1 where the region is empty
    bboxes: np.ndarray                      # (N_train, K_train, D, 2) int
    train_voxels: np.ndarray                # (N_train, K_train) region sizes (0: class not predicted there)
    test_voxels: np.ndarray                 # (K_test,) region sizes in the query case
    engine: str
    layers: str
    layer_names: tuple[str, ...]
    projection: Optional[int]
    threshold: float
    checkpoints: tuple[str, ...]
    learning_rates: tuple[float, ...]
    seconds: float
    case_name: str = ""
    key_name: str = "seed"                  # what ``seeds`` hold: "seed" (generated cases) or "case number" (files)
    scoring: str = "raw"                    # how checkpoint products became scores (core.influence.scoring)
    parameters: int = 0                     # gradient length before projection
    details: dict = field(default_factory=dict)
    similarity: Optional[np.ndarray] = None  # (K_test, N_train, K_train) cosine similarity of last-hidden-layer region features

    def _test_index(self, test_class: str) -> int:
        if test_class not in self.test_classes:
            raise ValueError(f"Class {test_class!r} was not queried; choose one of {', '.join(self.test_classes)}.")
        return self.test_classes.index(test_class)

    def _ranked(self, test_class: str, train_class: Optional[str], top: int, descending: bool) -> list[Evidence]:
        a = self._test_index(test_class)
        if train_class is not None and train_class not in self.train_classes:
            raise ValueError(f"Training class {train_class!r} is not in this result; choose one of {', '.join(self.train_classes)}.")
        columns = range(len(self.train_classes)) if train_class is None else [self.train_classes.index(train_class)]
        items = [
            (float(self.scores[a, n, b]), n, b)
            for n in range(len(self.training_cases)) for b in columns if self.train_voxels[n, b] > 0
        ]
        if self.test_voxels[a] == 0:
            items = []
        items.sort(key=lambda item: (-item[0] if descending else item[0], item[1], item[2]))
        return [self.evidence(n, b, score=s) for s, n, b in items[: max(int(top), 0)]]

    def evidence(self, case_index: int, class_index: int, *, score: float) -> Evidence:
        """The :class:`Evidence` of training case ``case_index``'s region of training class ``class_index``."""
        return Evidence(
            training_case=self.training_cases[case_index],
            seed=int(self.seeds[case_index]),
            key_name=self.key_name,
            train_class=self.train_classes[class_index],
            score=float(score),
            centroid=tuple(int(v) for v in self.centroids[case_index, class_index]),
            bbox=tuple((int(a), int(b)) for a, b in self.bboxes[case_index, class_index]),
            voxels=int(self.train_voxels[case_index, class_index]),
        )

    def proponents(self, test_class: str, train_class: Optional[str] = None, top: int = 10) -> list[Evidence]:
        """The training regions with the highest TracIn scores for ``test_class`` (most helpful first)."""
        return [e for e in self._ranked(test_class, train_class, top, True) if e.score > 0]

    def opponents(self, test_class: str, train_class: Optional[str] = None, top: int = 10) -> list[Evidence]:
        """The training regions with the lowest (most negative) TracIn scores for ``test_class``."""
        return [e for e in self._ranked(test_class, train_class, top, False) if e.score < 0]

    def rows(self) -> list[dict]:
        """Long format: one row per (test class, training case, training class) with a non-empty region."""
        out = []
        for a, test_class in enumerate(self.test_classes):
            ranks = _ranks(self.scores[a], self.train_voxels > 0) if self.test_voxels[a] else None
            for n, name in enumerate(self.training_cases):
                for b, train_class in enumerate(self.train_classes):
                    if self.train_voxels[n, b] == 0 or ranks is None:
                        continue
                    out.append({
                        "test_class": test_class, "training_case": name, self.key_column: int(self.seeds[n]),
                        "train_class": train_class, "score": float(self.scores[a, n, b]), "rank": int(ranks[n, b]),
                        "centroid": " ".join(str(int(v)) for v in self.centroids[n, b]),
                        "bbox": " ".join(f"{int(s)}:{int(e)}" for s, e in self.bboxes[n, b]),
                        "voxels": int(self.train_voxels[n, b]),
                    })
        return out

    @property
    def key_column(self) -> str:
        """The CSV column of the training cases' keys: ``seed`` or ``case_number``."""
        return self.key_name.replace(" ", "_")

    def to_csv(self, path) -> Path:
        """Write :meth:`rows` as CSV (atomically); rank 1 = strongest proponent of that test class."""
        columns = ["test_class", "training_case", self.key_column, "train_class", "score", "rank", "centroid", "bbox", "voxels"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({**row, "score": f"{row['score']:.6g}"})
        return write_text(Path(path), buffer.getvalue())

    def describe(self) -> str:
        """One line saying what was computed."""
        from .training_set import checkpoint_meaning

        projection = f", projected to {self.projection}" if self.projection else ""
        few = f" {checkpoint_meaning(len(self.checkpoints))}" if len(self.checkpoints) < 5 else ""
        return (
            f"TracIn ({self.engine} engine) of {self.case_name or 'the case'} over {len(self.training_cases)} training "
            f"cases and {len(self.checkpoints)} checkpoints; layers {self.layers} ({self.parameters} parameters{projection}); "
            f"regions at probability >= {self.threshold:g}; {self.scoring} scores; {self.seconds:.1f} s.{few}"
        )


def _ranks(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rank (1 = highest score) of every valid entry of a 2D score array; 0 elsewhere."""
    flat = np.where(valid, scores, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")
    ranks = np.empty(flat.size, dtype=np.int64)
    ranks[order] = np.arange(1, flat.size + 1)
    return np.where(valid.ravel(), ranks, 0).reshape(scores.shape)
