"""Ground-truth benchmark on generated cases, where the lesion and the modality that carries each class are known.

- Explanation precision: the share of the k most relevant voxels (|relevance| summed over
  modalities) that lie inside the true region of the class, k = the size of that region (and,
  as a second number, inside the whole tumour).
- Baselines, as in the pre-training benchmark seed: Sobel and Laplace edge filters of the input
  (a map that knows nothing of the model), and each method on the same architecture with every
  weight layer re-initialised (a model that knows nothing of tumours).
- Modality ground truth: the share of relevance on each modality against the contrast of the
  class in each modality. The carrier (the modality that carries the class) is by default the one
  in which the class differs most from what surrounds it (``carrier="surroundings"``: the class's
  mean against a shell of :data:`SHELL_VOXELS` voxels around it, in units of the shell's spread,
  on the inputs the network saw): a segmentation network draws a class's border, so what tells a
  necrotic core from its enhancing rim (T1ce) carries necrosis, not its brightness against healthy
  brain (T2). ``carrier="healthy"`` uses the generator's recorded contrast against tumour-free
  brain (``modality_signature``), which agrees with the surroundings for oedema and mostly for
  enhancing tumour; benchmarks/RESULTS.md reports both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from .. import progress as _progress
from ..attribution import AttributionMethod
from .problem import Problem, method_label, relevance_of
from .randomisation import randomised_copy, weight_layers
from .similarity import spearman, top_k_voxels
from .tables import write_csv

EDGE_FILTERS = ("sobel", "laplace")
#: Definitions of the modality that carries a class (see the module docstring).
CARRIERS = ("surroundings", "healthy")
#: Thickness of the shell around a class region that its surroundings contrast is measured against.
SHELL_VOXELS = 2
TRAINED, RANDOM, EDGES = "trained", "random weights", "input edges"


@dataclass(frozen=True)
class PrecisionRow:
    """Explanation precision of one map for one class."""

    method: str
    model: str              # "trained", "random weights", or "input edges" (filter baselines)
    class_name: str
    lesion_voxels: int      # k: voxels of the class's true region
    precision: float        # share of the top-k voxels inside the class's true region
    tumour_precision: float  # share of the top-k voxels inside the whole true tumour


@dataclass(frozen=True)
class ModalityRow:
    """Where one map puts a class's relevance among the modalities, against the modality that carries the class."""

    method: str
    model: str
    class_name: str
    carrier: str            # modality with the largest |contrast| of the class (against its surroundings or healthy brain)
    carrier_share: float    # share of the relevance on the carrier
    expected_share: float   # |contrast| of the carrier / sum of |contrast| over modalities
    top_modality: str       # modality with the largest share of relevance
    agrees: bool            # top_modality == carrier
    rank_correlation: float  # Spearman of the shares against |contrast| across modalities
    shares: str             # every modality's share, "name=share;..."


@dataclass(frozen=True)
class GroundTruthResult:
    """Precision and modality rows of the benchmark, and the seconds it took."""

    precision: tuple[PrecisionRow, ...]
    modality: tuple[ModalityRow, ...]
    seconds: float

    def to_csv(self, folder: str | Path, stem: str = "groundtruth") -> tuple[Path, ...]:
        """Write ``<stem>_precision.csv`` and (when present) ``<stem>_modality.csv`` into a folder (atomic)."""
        folder = Path(folder)
        paths = [write_csv(self.precision, folder / f"{stem}_precision.csv")]
        if self.modality:
            paths.append(write_csv(self.modality, folder / f"{stem}_modality.csv"))
        return tuple(paths)


def edge_relevance(inputs: torch.Tensor, kind: str) -> np.ndarray:
    """An edge filter of every input channel (C, *spatial): Sobel gradient magnitude or |Laplacian|."""
    if kind not in EDGE_FILTERS:
        raise ValueError(f"Unknown edge filter {kind!r}; choose one of {', '.join(EDGE_FILTERS)}.")
    array = inputs[0].detach().double().cpu().numpy()
    if kind == "sobel":
        return np.stack([np.sqrt(sum(ndimage.sobel(ch, axis=a) ** 2 for a in range(ch.ndim))) for ch in array])
    return np.stack([np.abs(ndimage.laplace(ch)) for ch in array])


def explanation_precision(relevance: np.ndarray, region: np.ndarray) -> float:
    """Share of the k voxels with the largest |relevance| (summed over channels) inside ``region``, k = its size."""
    region = np.asarray(region, dtype=bool)
    k = int(region.sum())
    if k == 0:
        return float("nan")
    return float(region.ravel()[top_k_voxels(relevance, k)].mean())


def surroundings_contrast(inputs: np.ndarray, region: np.ndarray, shell: int = SHELL_VOXELS) -> np.ndarray:
    """Per channel of ``inputs`` (C, *spatial): (mean inside ``region`` - mean of the shell around it) / the shell's SD.

    The shell is the region dilated by ``shell`` voxels, less the region and less voxels without
    signal in every channel (outside the head). Zeros when the region or its shell is empty.
    """
    from ..model.inference import silent_voxels

    region = np.asarray(region, dtype=bool)
    around = ndimage.binary_dilation(region, iterations=int(shell)) & ~region & ~silent_voxels(inputs)
    if not region.any() or not around.any():
        return np.zeros(len(inputs))
    return np.array([(ch[region].mean() - ch[around].mean()) / (ch[around].std() + 1e-8) for ch in inputs])


def modality_shares(relevance: np.ndarray) -> np.ndarray:
    """Share of the L1 norm of a map (C, *spatial) on each channel (zeros for an empty map)."""
    norms = np.abs(np.asarray(relevance, dtype=np.float64)).reshape(relevance.shape[0], -1).sum(1)
    total = norms.sum()
    return norms / total if total > 0 else norms


def ground_truth_benchmark(
    problem: Problem,
    methods: Sequence[str | AttributionMethod],
    *,
    signature: Mapping[str, Mapping[str, float]] | None = None,
    random_weights: bool = True,
    edge_filters: Sequence[str] = EDGE_FILTERS,
    carrier: str = "surroundings",
    seed: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> GroundTruthResult:
    """Precision and modality agreement of every method on the trained and a randomised network, and of edge filters.

    Modality rows need ``carrier="surroundings"`` (any labelled case), or ``"healthy"`` and the
    generator's ``signature`` of the case.
    """
    if problem.label is None:
        raise ValueError("The ground-truth benchmark needs the true label of the case; use a generated case.")
    if carrier not in CARRIERS:
        raise ValueError(f"Unknown carrier definition {carrier!r}; use one of {', '.join(CARRIERS)}.")
    inputs = problem.inputs[0].detach().double().cpu().numpy()
    contrasts = {}
    for k, name in enumerate(problem.class_names):
        if carrier == "surroundings" and problem.lesion(k).any():
            contrasts[name] = dict(zip(problem.channel_names, surroundings_contrast(inputs, problem.lesion(k))))
        elif carrier == "healthy" and signature and name in signature:
            contrasts[name] = signature[name]
    start = time.perf_counter()
    maps: list[tuple[str, str, np.ndarray]] = []
    total = len(methods) * (2 if random_weights else 1)
    random_model = None
    if random_weights:
        layers = weight_layers(problem.network, problem.inputs)
        random_model = randomised_copy(problem.network, layers, layers, seed)
    done = 0
    for method in methods:
        _progress.step(done, total, progress, should_cancel)
        relevance, _ = relevance_of(problem, method, should_cancel=should_cancel)
        maps.append((method_label(method), TRAINED, relevance))
        done += 1
        if random_model is not None:
            _progress.step(done, total, progress, should_cancel)
            relevance, _ = relevance_of(problem, method, network=random_model, should_cancel=should_cancel)
            maps.append((method_label(method), RANDOM, relevance))
            done += 1
    n_classes = len(problem.class_names)
    for kind in edge_filters:
        edges = edge_relevance(problem.inputs, kind)
        maps.append((kind, EDGES, np.broadcast_to(edges, (n_classes,) + edges.shape)))
    _progress.step(total, total, progress, None)
    tumour = problem.label != 0
    precision, modality = [], []
    for label, model, relevance in maps:
        for k, name in enumerate(problem.class_names):
            lesion = problem.lesion(k)
            precision.append(PrecisionRow(label, model, name, int(lesion.sum()),
                                          explanation_precision(relevance[k], lesion),
                                          explanation_precision(relevance[k], tumour)))
            if name in contrasts and relevance.shape[1] == len(problem.channel_names):
                modality.append(_modality_row(label, model, name, relevance[k], problem.channel_names, contrasts[name]))
    return GroundTruthResult(tuple(precision), tuple(modality), time.perf_counter() - start)


def _modality_row(method, model, name, relevance, channels, contrast) -> ModalityRow:
    """Compare a class's relevance shares across modalities with the generator's |contrast| of the class."""
    missing = [c for c in channels if c not in contrast]
    if missing:
        raise ValueError(f"The signature of class {name!r} has no contrast for modality {missing[0]!r}.")
    expected = np.abs(np.array([float(contrast[c]) for c in channels]))
    shares = modality_shares(relevance)
    carrier = int(np.argmax(expected))
    top = int(np.argmax(shares))
    return ModalityRow(
        method, model, name, channels[carrier], float(shares[carrier]), float(expected[carrier] / expected.sum()),
        channels[top], bool(top == carrier and shares.sum() > 0), spearman(shares, expected),
        ";".join(f"{c}={s:.3f}" for c, s in zip(channels, shares)),
    )
