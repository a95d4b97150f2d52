"""The stored form of training cases for a TracIn index: their (projected) gradients and class regions."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..progress import step
from .checkpoints import TracInModel
from .exact import training_example
from .projection import sketch


def gradient_rows(model: TracInModel, seeds: Sequence[int], class_indices: Sequence[int], *, threshold: float,
                  projection: Optional[int], margin: int, progress=None, should_cancel=None, done: int = 0,
                  total: int = 0) -> dict:
    """Stored form of training cases ``seeds``: (T, n, K, d) gradients (sketched when asked) and their regions."""
    gradients, voxels, centroids, bboxes, names, features = [], [], [], [], [], []
    for i, seed in enumerate(seeds):
        example = training_example(model, int(seed), class_indices, threshold=threshold, margin=margin)
        rows = model.gradients(example)                                  # (T, K, D)
        if projection:
            t, k, d = rows.shape
            rows = sketch(rows.reshape(t * k, d), projection).reshape(t, k, -1)
        gradients.append(rows.numpy().astype(np.float32)[:, None])
        voxels.append(example.voxels)
        features.append(model.features(example))
        centroids.append(example.centroids)
        bboxes.append(example.bboxes)
        names.append(example.name)
        if total:
            step(done + i + 1, total, progress, should_cancel)
    return {
        "gradients": np.concatenate(gradients, axis=1), "voxels": np.stack(voxels), "centroids": np.stack(centroids),
        "bboxes": np.stack(bboxes), "names": names, "seeds": [int(s) for s in seeds], "features": np.stack(features),
    }
