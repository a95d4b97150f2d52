"""The faithfulness check of TracIn: last-hidden-layer features of class regions and their similarity.

Each class region is summarised by the mean of the final network's features at the input of its
last parametrised layer (the last hidden layer) over the region's voxels. Proponents should be
more similar to the test region than opponents; :func:`similarity_check` says how far they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .regions import IGNORE, RegionExample


def feature_size(network: torch.nn.Module, layer: str, probe: torch.Tensor) -> int:
    """How many features (channels) module ``layer`` receives, seen on a forward pass of ``probe``."""
    module = dict(network.named_modules())[layer]
    captured: list[int] = []
    handle = module.register_forward_pre_hook(lambda m, inputs: captured.append(int(inputs[0].shape[1])))
    try:
        with torch.no_grad():
            network(probe)
    finally:
        handle.remove()
    return captured[-1]


def region_features(network: torch.nn.Module, layer: str, example: RegionExample, *, spatial_dims: int,
                    slice_axis: Optional[int], size: int = 0) -> np.ndarray:
    """(K, F) mean input features of module ``layer`` over each class region of ``example`` (zeros when empty)."""
    module = dict(network.named_modules())[layer]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0].detach()))
    k = example.targets.shape[0]
    try:
        if not example.voxels.any():
            return np.zeros((k, size), dtype=np.float32)
        device = next(network.parameters()).device
        with torch.no_grad():
            image = example.image.to(device)
            if spatial_dims == 3:
                network(image)
                features = _resize(captured[-1], image.shape[2:])                     # (1, F, *crop)
            else:
                axis = 2 + int(slice_axis)
                slices = image.movedim(axis, 1).flatten(0, 1)
                network(slices)
                features = _resize(captured[-1], slices.shape[2:]).unsqueeze(0).movedim(1, axis)
    finally:
        handle.remove()
    features = features[0].float().cpu()
    flat = features.flatten(1)                                           # (F, V)
    out = np.zeros((k, flat.shape[0]), dtype=np.float32)
    for i in range(k):
        inside = (example.targets[i] != IGNORE).flatten()
        if inside.any():
            out[i] = flat[:, inside].mean(1).numpy()
    return out


def _resize(features: torch.Tensor, shape) -> torch.Tensor:
    """Features brought to the output's resolution (linear interpolation) when a layer works coarser."""
    shape = tuple(int(v) for v in shape)
    if tuple(features.shape[2:]) == shape:
        return features
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return torch.nn.functional.interpolate(features.float(), size=shape, mode=mode, align_corners=False)


def cosine_similarity(test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(K_test, N, K_train) cosine similarity of (K_test, F) test and (N, K_train, F) training region features."""
    a = test / np.maximum(np.linalg.norm(test, axis=-1, keepdims=True), 1e-12)
    b = train / np.maximum(np.linalg.norm(train, axis=-1, keepdims=True), 1e-12)
    return np.einsum("af,nbf->anb", a, b)


@dataclass(frozen=True)
class SimilarityRow:
    """How last-hidden-layer similarity relates to TracIn rank for one test class."""

    test_class: str
    regions: int                  # training regions compared
    spearman: float               # Spearman correlation of TracIn score and similarity
    proponents: float             # mean similarity of the top proponents
    opponents: float              # mean similarity of the top opponents
    everyone: float               # mean similarity of all training regions
    top: int


def similarity_check(result, *, top: int = 10) -> list[SimilarityRow]:
    """Per test class: Spearman of TracIn score vs feature similarity, and mean similarity of proponents vs opponents."""
    from scipy.stats import spearmanr

    if result.similarity is None:
        raise ValueError("This TracIn result has no region features; query again to compute them.")
    rows = []
    for a, name in enumerate(result.test_classes):
        valid = result.train_voxels > 0
        if result.test_voxels[a] == 0 or valid.sum() < 3:
            continue
        scores, similarity = result.scores[a][valid], result.similarity[a][valid]
        order = np.argsort(-scores, kind="stable")
        k = max(1, min(int(top), len(order) // 2))
        rho = spearmanr(scores, similarity).statistic if np.ptp(similarity) > 0 and np.ptp(scores) > 0 else float("nan")
        rows.append(SimilarityRow(
            test_class=name, regions=int(valid.sum()), spearman=float(rho),
            proponents=float(similarity[order[:k]].mean()), opponents=float(similarity[order[-k:]].mean()),
            everyone=float(similarity.mean()), top=k,
        ))
    return rows


def similarity_table(rows: Sequence[SimilarityRow]) -> str:
    """The rows as a fixed-width text table."""
    head = f"{'test class':<14}{'regions':>8}{'Spearman':>10}{'proponents':>12}{'opponents':>11}{'all':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.test_class:<14}{r.regions:>8}{r.spearman:>10.3f}{r.proponents:>12.3f}{r.opponents:>11.3f}{r.everyone:>8.3f}")
    if rows:
        lines.append(f"(proponents/opponents: mean cosine similarity of the top {rows[0].top} of each; all: every training region)")
    return "\n".join(lines)


def similarity_plot(result, rows: Sequence[SimilarityRow], path) -> Path:
    """A PNG: for each test class, feature similarity against TracIn rank of every training region."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.files import atomic_path

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path.name} is not a .png name; give the plot a .png name.")
    names = [r.test_class for r in rows] or list(result.test_classes[:1])
    figure = Figure(figsize=(4.2 * len(names), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    for i, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), i + 1)
        a = result.test_classes.index(name)
        valid = result.train_voxels > 0
        scores, similarity = result.scores[a][valid], result.similarity[a][valid]
        ranks = np.empty(len(scores))
        ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
        classes = np.broadcast_to(np.arange(len(result.train_classes)), valid.shape)[valid]
        for b, train_class in enumerate(result.train_classes):
            chosen = classes == b
            axes.scatter(ranks[chosen], similarity[chosen], s=10, alpha=0.7, label=train_class)
        row = next((r for r in rows if r.test_class == name), None)
        title = f"test {name}" + (f" (Spearman {row.spearman:.2f})" if row else "")
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("TracIn rank (1 = strongest proponent)")
        axes.set_ylabel("cosine similarity, last hidden layer")
        axes.legend(fontsize=7, title="training class", title_fontsize=7)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return path
