"""Model parameter randomisation test (Adebayo et al. 2018): does the map change when the weights are destroyed?

The layers (every module with a weight of two or more dimensions: convolutions, transposed
convolutions, linear layers) are listed in the order the forward pass runs them. Cascading
randomisation re-initialises them from the output layer towards the input, one more at each
step; independent randomisation re-initialises one layer at a time. Re-initialisation uses the
layer's own PyTorch initialiser (``reset_parameters``), seeded per layer, on a deep copy: the
user's network is never touched. At each step the relevance of the same target (the same
regions, the same classes) is recomputed and compared with the original map.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import progress as _progress
from ..attribution import AttributionMethod
from ..attribution._hooks import forward_with_hooks
from .problem import Problem, method_label, part_of, relevance_of
from .similarity import prepare_reference, similarities
from .tables import MeasuredValues, write_csv

MODES = ("cascading", "independent")
PASS_SPEARMAN = 0.5   # a method passes when full randomisation leaves a rank correlation below this


@dataclass(frozen=True)
class SimilarityRow(MeasuredValues):
    """Similarity of one class's map after randomisation to its map from the trained network."""

    method: str
    mode: str            # "cascading", "independent", or "none" (the trained network)
    depth: int           # cascading: number of layers randomised from the output; independent: position from the output
    layer: str           # the layer randomised last (cascading) or alone (independent)
    class_name: str
    values: Mapping[str, float]   # every registered similarity measure (similarity_names()); k = the target region's size
    seconds: float       # to explain on this network

    def as_dict(self) -> dict:
        """The row as one flat mapping (CSV columns)."""
        return {"method": self.method, "mode": self.mode, "depth": self.depth, "layer": self.layer,
                "class_name": self.class_name, **self.values, "seconds": self.seconds}


@dataclass(frozen=True)
class VerdictRow(MeasuredValues):
    """The randomisation verdict of one method and class: similarity once every layer is randomised."""

    method: str
    class_name: str
    values: Mapping[str, float]
    passes: bool         # spearman < the pass threshold: the map depends on the learned weights

    def as_dict(self) -> dict:
        """The row as one flat mapping (CSV columns)."""
        return {"method": self.method, "class_name": self.class_name, **self.values, "passes": self.passes}


@dataclass(frozen=True)
class RandomisationResult:
    """All similarity rows of a randomisation test, the layers in forward order, and the seconds it took."""

    rows: tuple[SimilarityRow, ...]
    layers: tuple[str, ...]
    seed: int
    seconds: float

    def verdicts(self, threshold: float = PASS_SPEARMAN) -> tuple[VerdictRow, ...]:
        """Per method and class, the similarity at the deepest cascading step and whether it passes."""
        deepest: dict[tuple[str, str], SimilarityRow] = {}
        for row in self.rows:
            if row.mode == "cascading":
                key = (row.method, row.class_name)
                if key not in deepest or row.depth > deepest[key].depth:
                    deepest[key] = row
        return tuple(
            VerdictRow(r.method, r.class_name, r.values, bool(r.spearman < threshold))
            for r in deepest.values()
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write every similarity row as CSV (atomic)."""
        return write_csv(self.rows, path)


def weight_layers(network: torch.nn.Module, inputs: torch.Tensor) -> tuple[str, ...]:
    """Names of the modules with a weight of two or more dims, in the order one forward pass runs them."""
    candidates = {
        module: name for name, module in network.named_modules()
        if any(p.ndim >= 2 for p in module.parameters(recurse=False))
    }
    order: list[str] = []

    def hook(module, _inputs, _output):
        name = candidates[module]
        if name not in order:
            order.append(name)

    handles = [m.register_forward_hook(hook) for m in candidates]
    forward_with_hooks(network, inputs, handles)
    if not order:
        raise ValueError("The network has no layer with weights to randomise (no convolution or linear layer ran).")
    return tuple(order)


def randomised_copy(network: torch.nn.Module, layers: Sequence[str], names: Sequence[str], seed: int = 0) -> torch.nn.Module:
    """A deep copy of ``network`` whose layers ``names`` are re-initialised (seed per layer position in ``layers``)."""
    # Each layer is re-initialised on the CPU and copied to its device, so a seed gives the same
    # weights on every device (CUDA's generator draws other numbers than the CPU's).
    model = copy.deepcopy(network)
    for name in names:
        module = model.get_submodule(name)
        fresh = copy.deepcopy(module).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) * 100_003 + layers.index(name))
            with torch.no_grad():
                if hasattr(fresh, "reset_parameters"):
                    fresh.reset_parameters()
                else:
                    for p in fresh.parameters(recurse=False):
                        p.normal_(0.0, float(p.std()) if p.numel() > 1 else 1.0)
        with torch.no_grad():
            for target, source in zip(module.parameters(recurse=False), fresh.parameters(recurse=False)):
                target.copy_(source.to(target.device))
    return model.eval()


def depths(n_layers: int, max_steps: int | None) -> list[int]:
    """Randomisation depths 1..n_layers, evenly thinned to at most ``max_steps`` (always including all layers)."""
    if max_steps is None or max_steps >= n_layers:
        return list(range(1, n_layers + 1))
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}.")
    if max_steps == 1:
        return [n_layers]
    return sorted({int(round(d)) for d in np.linspace(1, n_layers, max_steps)})


def randomisation_test(
    problem: Problem,
    methods: Sequence[str | AttributionMethod],
    *,
    modes: Sequence[str] = MODES,
    max_steps: int | None = None,
    top_k: int | None = None,
    seed: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> RandomisationResult:
    """Cascading and/or independent parameter randomisation of the problem's network, every method's map compared at each step."""
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"Unknown randomisation mode {unknown[0] if unknown else None!r}; choose from {', '.join(MODES)}.")
    if not methods:
        raise ValueError("No attribution method to test; give one or more methods.")
    start = time.perf_counter()
    layers = weight_layers(problem.network, problem.inputs)
    chosen = depths(len(layers), max_steps)
    plan: list[tuple[str, int, tuple[str, ...]]] = []
    for mode in modes:
        for depth in chosen:
            names = layers[len(layers) - depth:] if mode == "cascading" else (layers[len(layers) - depth],)
            plan.append((mode, depth, names))
    total = len(methods) * (len(plan) + 1)
    done = 0
    original: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
    rows: list[SimilarityRow] = []
    for method in methods:
        _progress.step(done, total, progress, should_cancel)
        label = method_label(method)
        relevance, seconds = relevance_of(problem, method, progress=part_of(progress, done, total),
                                          should_cancel=should_cancel)
        original[label] = [prepare_reference(r) for r in relevance]   # prepared once, compared at every step
        rows += _compare(label, "none", 0, "", original[label], relevance, problem, top_k, seconds)
        done += 1
    for mode, depth, names in plan:
        model = randomised_copy(problem.network, layers, names, seed)
        for method in methods:
            _progress.step(done, total, progress, should_cancel)
            label = method_label(method)
            relevance, seconds = relevance_of(problem, method, network=model, progress=part_of(progress, done, total),
                                              should_cancel=should_cancel)
            rows += _compare(label, mode, depth, names[0], original[label], relevance, problem, top_k, seconds)
            done += 1
        del model
    _progress.step(total, total, progress, None)
    return RandomisationResult(tuple(rows), layers, int(seed), time.perf_counter() - start)


def _compare(method, mode, depth, layer, reference, relevance, problem, top_k, seconds) -> list[SimilarityRow]:
    """One similarity row per explained class (``reference``: the trained network's maps, prepared per class)."""
    rows = []
    for k, name in enumerate(problem.class_names):
        k_voxels = top_k or int(problem.target.masks[k].sum())
        k_voxels = min(k_voxels, int(np.prod(problem.spatial_shape)))
        rows.append(SimilarityRow(method, mode, depth, layer, name, similarities(reference[k], relevance[k], k_voxels),
                                  float(seconds)))
    return rows
