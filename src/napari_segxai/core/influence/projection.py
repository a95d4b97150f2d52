"""Seeded Gaussian random projection of long gradient vectors (the index's compressed rows)."""

from __future__ import annotations

import math

import torch

PROJECTION_SEED = 20240607
#: Rows of the projection matrix made at a time.
_CHUNK = 4096


def project(vectors: torch.Tensor, size: int, seed: int = PROJECTION_SEED) -> torch.Tensor:
    """(M, D) -> (M, size): a seeded Gaussian random projection (entries N(0, 1/size)), made chunk by chunk."""
    vectors = vectors.float()
    out = torch.zeros(vectors.shape[0], int(size), dtype=torch.float64)
    generator = torch.Generator()
    scale = 1.0 / math.sqrt(int(size))
    for start in range(0, vectors.shape[1], _CHUNK):
        stop = min(start + _CHUNK, vectors.shape[1])
        generator.manual_seed(int(seed) * 1_000_003 + start)
        matrix = torch.randn(stop - start, int(size), generator=generator) * scale
        out += (vectors[:, start:stop] @ matrix).double()
    return out.float()


def sketch(vectors: torch.Tensor, size: int, seed: int = PROJECTION_SEED) -> torch.Tensor:
    """(M, D) -> (M, size): a seeded CountSketch (each coordinate added, with a random sign, to one random bucket).

    Inner products are kept in expectation, like the Gaussian projection, at O(D) cost per vector
    instead of O(D x size) (Charikar et al. 2002; Weinberger et al. 2009, "feature hashing").
    """
    vectors = vectors.float()
    generator = torch.Generator()
    generator.manual_seed(int(seed) * 1_000_003 + 7)
    buckets = torch.randint(0, int(size), (vectors.shape[1],), generator=generator)
    signs = torch.randint(0, 2, (vectors.shape[1],), generator=generator).float() * 2 - 1
    out = torch.zeros(vectors.shape[0], int(size), dtype=torch.float64)
    out.index_add_(1, buckets, (vectors * signs).double())
    return out.float()
