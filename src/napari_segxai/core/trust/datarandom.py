"""Data randomisation test (Adebayo et al. 2018): maps of a model trained on permuted labels against the real ones.

Two twins of the card's architecture start from the same seeded initialisation and train for
the same short budget on the same generated cases, with the demo trainer's recipe (loss,
optimiser, learning-rate schedule and intensity augmentation of ``core.training.pool``; those recorded in
the card's training manifest when it has one): one on the true label maps, one on label maps
permuted among the cases (case i learns the label map of case i + 1: a derangement, so no
case keeps its own). Generated cases share one grid (the MNI152 template), so every label map
fits every case. Maps of the same target are then compared between the model under test, the
true-label twin and the permuted-label twin. A method whose map survives the permutation does
not explain what the model learned from the labels.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch

from .. import progress as _progress
from ..attribution import AttributionMethod
from .problem import Problem, method_label, relevance_of
from .similarity import prepare_reference, similarities
from .tables import MeasuredValues, write_csv

if TYPE_CHECKING:
    from ..model.card import ModelCard

PAIRS = (("model", "permuted labels"), ("true labels", "permuted labels"), ("model", "true labels"))
TRAINING_SEED_START = 1000   # the demo trainer's first training seed; the demo case's seed is never among them


@dataclass(frozen=True)
class DataRandomisationRow(MeasuredValues):
    """Similarity of one class's maps from two of: the model, its true-label twin, its permuted-label twin."""

    method: str
    class_name: str
    first: str
    second: str
    values: Mapping[str, float]   # every registered similarity measure (similarity_names())

    def as_dict(self) -> dict:
        """The row as one flat mapping (CSV columns)."""
        return {"method": self.method, "class_name": self.class_name, "first": self.first, "second": self.second,
                **self.values}


@dataclass(frozen=True)
class DataRandomisationResult:
    """Similarity rows, the twins' final training losses, and the training settings."""

    rows: tuple[DataRandomisationRow, ...]
    final_loss: dict
    settings: dict
    seconds: float

    def to_csv(self, path: str | Path) -> Path:
        """Write the rows as CSV (atomic)."""
        return write_csv(self.rows, path)


def training_volumes(card: "ModelCard", seeds: Sequence[int], size: str = "full"):
    """Generated cases preprocessed as the card says, (C, *grid) each, and their class-index maps on the same grid."""
    from ..model.preprocess import preprocess
    from ..training.synth import generate_case

    lookup = {c.label: i for i, c in enumerate(card.classes)}
    images, targets = [], []
    for seed in seeds:
        case = generate_case(int(seed), size=size).case
        image, grid = preprocess(case, card)
        label = np.rint(grid.to_network_grid(case.label.astype(np.float32), interpolation="nearest")).astype(int)
        index = np.zeros(label.shape, np.int64)
        for value, k in lookup.items():
            index[label == value] = k
        images.append(image[0])
        targets.append(torch.from_numpy(index))
    shapes = {tuple(t.shape) for t in targets}
    if len(shapes) != 1:
        raise ValueError("Label permutation needs every training case on one grid; generate them with one size.")
    return images, targets


def twin_recipe(card: "ModelCard") -> dict:
    """How the twins train: the loss, optimiser, schedule and augmentation of the card's training manifest, else the demo trainer's defaults."""
    from ..training.config import DEFAULT_CONFIG

    recipe = {key: dict(DEFAULT_CONFIG[key]) for key in ("loss", "optimizer", "schedule", "augmentation")}
    if card.training is not None:
        try:
            manifest = json.loads(Path(card.training).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"The training manifest {card.training} of model card {card.path} is unreadable ({err}).") from err
        for key in recipe:
            if isinstance(manifest.get(key), dict):
                recipe[key] = dict(manifest[key])
    return recipe


def train_twin(
    card: "ModelCard",
    images: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    *,
    permute: bool,
    steps: int = 100,
    crop: int = 32,
    learning_rate: float | None = None,
    seed: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> tuple[torch.nn.Module, float]:
    """The card's architecture trained from a seeded initialisation on true or permuted labels with the demo trainer's recipe; and its last loss.

    Each update takes one random ``crop``-sided cube (70% centred on a labelled voxel), flipped and
    intensity-augmented as ``core.training.pool`` does, with the learning rate of the recipe's schedule
    stretched over ``steps`` updates (warm-up at most a fifth of them). ``learning_rate``
    overrides the recipe's initial rate.
    """
    from ..model.architectures import create_network
    from ..training.pool import augment
    from ..training.config import build_loss, build_optimizer
    from ..training.schedule import learning_rate as scheduled_rate

    if card.spatial_dims != 3:
        raise ValueError("The data randomisation test trains 3D models only; use a 3D model card.")
    if len(images) < 2:
        raise ValueError("Label permutation needs at least two training cases.")
    recipe = twin_recipe(card)
    if learning_rate is not None:
        recipe["optimizer"]["lr"] = float(learning_rate)
    warmup = min(int(recipe["schedule"].get("warmup_steps", 0)), steps // 5)
    recipe["schedule"]["warmup_steps"] = warmup
    labels = [targets[j] for j in label_permutation(len(targets))] if permute else list(targets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = create_network(card.architecture, card.kwargs, source=f"Model card {card.path}")
        network.train()
        loss_fn = build_loss(recipe)
        optimizer = build_optimizer(recipe, network.parameters())
        rng = np.random.default_rng(seed)
        loss = torch.tensor(float("nan"))
        for step in range(steps):
            _progress.step(step, steps, progress, should_cancel)
            for group in optimizer.param_groups:
                group["lr"] = scheduled_rate(step, (step - warmup) / max(steps - warmup, 1), recipe)
            i = int(rng.integers(len(images)))
            image, label = _crop(images[i], labels[i], crop, rng)
            for axis in recipe["augmentation"].get("flip_axes", ()):
                if rng.random() < 0.5:
                    image, label = torch.flip(image, dims=[axis + 1]), torch.flip(label, dims=[axis])
            image = augment(image, rng, recipe["augmentation"])
            optimizer.zero_grad()
            loss = loss_fn(network(image[None]), label[None, None])
            loss.backward()
            optimizer.step()
    _progress.step(steps, steps, progress, None)
    return network.eval(), float(loss.detach())


def label_permutation(n: int) -> list[int]:
    """Which case's label map each of ``n`` cases learns: the next one's (no case keeps its own)."""
    return [(i + 1) % n for i in range(n)]


def _crop(image: torch.Tensor, label: torch.Tensor, size: int, rng: np.random.Generator):
    """A random cube of side ``size`` (the whole volume along shorter axes), centred on a labelled voxel 70% of the time."""
    spatial = label.shape
    foreground = torch.nonzero(label > 0)
    if len(foreground) and rng.random() < 0.7:
        centre = foreground[int(rng.integers(len(foreground)))].tolist()
    else:
        centre = [int(rng.integers(s)) for s in spatial]
    box = []
    for c, s in zip(centre, spatial):
        n = min(size, s)
        start = min(max(c - n // 2, 0), s - n)
        box.append(slice(start, start + n))
    return image[(slice(None),) + tuple(box)], label[tuple(box)]


def data_randomisation_test(
    problem: Problem,
    methods: Sequence[str | AttributionMethod],
    card: "ModelCard",
    *,
    cases: int = 8,
    size: str = "full",
    steps: int = 100,
    crop: int = 32,
    seed: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> DataRandomisationResult:
    """Train the true-label and permuted-label twins, explain the problem's target with each, and compare the maps pairwise."""
    if not methods:
        raise ValueError("No attribution method to test; give one or more methods.")
    start = time.perf_counter()
    seeds = range(TRAINING_SEED_START, TRAINING_SEED_START + int(cases))
    images, targets = training_volumes(card, seeds, size)
    twins = {}
    losses = {}
    total = 2 * steps + 3 * len(methods)
    for k, (name, permute) in enumerate((("true labels", False), ("permuted labels", True))):
        offset = k * steps
        twin, loss = train_twin(card, images, targets, permute=permute, steps=steps, crop=crop, seed=seed,
                                should_cancel=should_cancel,
                                progress=None if progress is None else (lambda d, t, o=offset: progress(o + d, total)))
        twins[name], losses[name] = twin.to(problem.inputs.device), loss
    rows: list[DataRandomisationRow] = []
    done = 2 * steps
    for method in methods:
        maps = {}
        for name, network in (("model", problem.network), *twins.items()):
            _progress.step(done, total, progress, should_cancel)
            maps[name], _ = relevance_of(problem, method, network=network, should_cancel=should_cancel)
            done += 1
        for first, second in PAIRS:
            for k, class_name in enumerate(problem.class_names):
                k_voxels = int(problem.target.masks[k].sum())
                values = similarities(prepare_reference(maps[first][k]), maps[second][k], k_voxels)
                rows.append(DataRandomisationRow(method_label(method), class_name, first, second, values))
    _progress.step(total, total, progress, None)
    settings = dict(cases=int(cases), size=size, steps=int(steps), crop=int(crop), seed=int(seed),
                    training_seeds=[int(s) for s in seeds])
    return DataRandomisationResult(tuple(rows), losses, settings, time.perf_counter() - start)

