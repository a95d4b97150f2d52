"""The stored form of training cases for a TracIn index: their (projected) gradients and class regions."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..progress import step
from .checkpoints import TracInModel
from .exact import training_example
from .projection import sketch


def gradient_rows(model: TracInModel, seeds: Sequence[int], class_indices: Sequence[int], *, threshold: float,
                  projection: Optional[int], margin: int, progress=None, should_cancel=None, done: int = 0,
                  total: int = 0, batch: int = 16) -> dict:
    """Stored form of training cases ``seeds``: (T, n, K, d) gradients (projected when asked) and their regions.

    Projected gradients are projected ``batch`` cases at a time (the projection matrix is made once per batch).
    """
    gradients, voxels, centroids, bboxes, names, features = [], [], [], [], [], []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if not pending:
            return
        stacked = torch.stack(pending, 1)                                 # (T, b, K, D)
        t, b, k, d = stacked.shape
        if projection:
            stacked = sketch(stacked.reshape(t * b * k, d), projection).reshape(t, b, k, -1)
        gradients.append(stacked.numpy().astype(np.float32))
        pending.clear()

    for i, seed in enumerate(seeds):
        example = training_example(model, int(seed), class_indices, threshold=threshold, margin=margin)
        pending.append(model.gradients(example))                          # (T, K, D)
        voxels.append(example.voxels)
        features.append(model.features(example))
        centroids.append(example.centroids)
        bboxes.append(example.bboxes)
        names.append(example.name)
        if not projection or len(pending) >= batch:
            flush()
        if total:
            step(done + i + 1, total, progress, should_cancel)
    flush()
    return {
        "gradients": np.concatenate(gradients, axis=1), "voxels": np.stack(voxels), "centroids": np.stack(centroids),
        "bboxes": np.stack(bboxes), "names": names, "seeds": [int(s) for s in seeds], "features": np.stack(features),
    }
