"""The exact TracIn engine: gradients of every training region at every checkpoint, computed for each query."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..progress import CancelFn, ProgressFn, step
from .checkpoints import TracInModel
from .regions import DEFAULT_MARGIN, RegionExample, prepare_example
from .scoring import scored
from .training_set import check_generator, training_case


def training_example(model: TracInModel, seed: int, class_indices: Sequence[int], *, threshold: float,
                     margin: int = DEFAULT_MARGIN) -> RegionExample:
    """Training case ``seed`` cut into the final network's confident class regions, with its label as the loss target."""
    case = training_case(model.card, seed)
    return prepare_example(
        case, model.card, model.network, class_indices, threshold=threshold, target="label",
        label_to_index=model.record.label_to_index, margin=margin, seed=seed, device=model.device,
    )


def tracin_scores(learning_rates: Sequence[float], test: torch.Tensor, train: torch.Tensor,
                  scoring: str = "raw") -> np.ndarray:
    """sum_t lr_t * test[t] . train[t] (``scoring`` raw, else renormalised) for (T, A, D) test and (T, B, D) train -> (A, B)."""
    test, train = test.double(), train.double()
    products = torch.einsum("tad,tbd->tab", test, train)
    return scored(products, learning_rates, test.norm(dim=-1), train.norm(dim=-1), scoring).numpy()


def exact_influence(
    model: TracInModel,
    test: RegionExample,
    seeds: Sequence[int],
    class_indices: Sequence[int],
    *,
    threshold: float,
    margin: int = DEFAULT_MARGIN,
    scoring: str = "raw",
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> tuple[np.ndarray, list[RegionExample], np.ndarray]:
    """(K_test, N, K_train) TracIn scores of ``test`` against every training case, the training regions and their features."""
    check_generator(model.record)
    total = len(seeds) + 1
    step(0, total, progress, should_cancel)
    test_gradients = model.gradients(test)
    step(1, total, progress, should_cancel)
    scores = np.zeros((test.targets.shape[0], len(seeds), len(class_indices)), dtype=np.float64)
    examples, features = [], []
    for n, seed in enumerate(seeds):
        example = training_example(model, seed, class_indices, threshold=threshold, margin=margin)
        scores[:, n, :] = tracin_scores(model.learning_rates, test_gradients, model.gradients(example), scoring)
        features.append(model.features(example))
        examples.append(_light(example))
        step(n + 2, total, progress, should_cancel)
    return scores, examples, np.stack(features)


def _light(example: RegionExample) -> RegionExample:
    """The example without its image and targets (only where its regions are is kept)."""
    from dataclasses import replace

    return replace(example, image=torch.empty(0), targets=torch.empty(0, dtype=torch.int64))
