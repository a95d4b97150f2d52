"""Similarity of two relevance maps: Spearman rank correlation, structural similarity (SSIM), top-k overlap.

The measures the sanity checks report are registered with :func:`register_similarity`; the
randomisation and data-randomisation rows, their CSV files, the plots and the Trust widget take
them from :func:`similarity_measures`, so adding one is one decorated class.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from scipy import ndimage

SSIM_K1 = 0.01
SSIM_K2 = 0.03


def abs_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the absolute values of two maps (Adebayo et al.'s measure)."""
    a, b = _pair(a, b)
    return spearman(np.abs(a), np.abs(b))


def rank_correlation(ranks_a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of an array whose ranks are already known (``ranks(a)``) with another array."""
    b = np.asarray(b).ravel()
    if ranks_a.shape != b.shape:
        raise ValueError(f"The two maps have different sizes {ranks_a.size} and {b.size}; compare maps of one grid.")
    if np.ptp(ranks_a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks(b))[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays of the same shape (nan when either is constant)."""
    a, b = _pair(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties given their average rank (as scipy.stats.rankdata), sorted by torch."""
    values = np.asarray(values)
    dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.float64
    flat = torch.from_numpy(np.ascontiguousarray(values, dtype=dtype).ravel())
    ordered, order = torch.sort(flat)
    n = flat.numel()
    new_run = torch.ones(n, dtype=torch.bool)
    new_run[1:] = ordered[1:] != ordered[:-1]
    starts = torch.nonzero(new_run).flatten()
    run = torch.cumsum(new_run.long(), 0) - 1
    ends = torch.cat([starts[1:], torch.tensor([n])])
    average = (starts + ends - 1).double() / 2 + 1           # mean of the 1-based positions of each run
    out = torch.empty(n, dtype=torch.float64)
    out[order] = average[run]
    return out.numpy()


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float | None = None,
    win_size: int = 7,
    gaussian: bool = False,
    sigma: float = 1.5,
) -> float:
    """Mean structural similarity (Wang et al. 2004) of two arrays of any dimension, as scikit-image computes it."""
    # Uniform ``win_size`` windows with the sample covariance (scikit-image's default), or Gaussian
    # windows (``sigma``, truncated at 3.5 sigma, population covariance); the border of half a
    # window is left out of the mean. ``data_range`` defaults to the joint range of both arrays.
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs two arrays of the same shape, got {a.shape} and {b.shape}.")
    if gaussian:
        truncate = 3.5
        win_size = 2 * int(truncate * sigma + 0.5) + 1

        def smooth(x):
            return ndimage.gaussian_filter(x, sigma=sigma, truncate=truncate, mode="reflect")

        cov_norm = 1.0
    else:
        if win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"The SSIM window must be an odd size of at least 3, got {win_size}.")

        def smooth(x):
            return ndimage.uniform_filter(x, size=win_size, mode="reflect")

        n = win_size ** a.ndim
        cov_norm = n / (n - 1)
    if any(s < win_size for s in a.shape):
        raise ValueError(f"SSIM needs every side of the map to be at least {win_size} voxels, got {a.shape}.")
    if data_range is None:
        data_range = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    if data_range <= 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    mean_a, mean_b = smooth(a), smooth(b)
    var_a = cov_norm * (smooth(a * a) - mean_a * mean_a)
    var_b = cov_norm * (smooth(b * b) - mean_b * mean_b)
    cov = cov_norm * (smooth(a * b) - mean_a * mean_b)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    index = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    pad = (win_size - 1) // 2
    inner = tuple(slice(pad, s - pad) for s in a.shape)
    return float(index[inner].mean())


def map_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two relevance maps (C, *spatial): |relevance| scaled to [0, 1] by each map's maximum, mean over channels."""
    a, b = _pair(a, b, flatten=False)
    a, b = np.abs(a), np.abs(b)
    a = a / a.max() if a.max() > 0 else a
    b = b / b.max() if b.max() > 0 else b
    win = min(7, min(a.shape[1:]) - (1 - min(a.shape[1:]) % 2))
    return float(np.mean([ssim(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b)]))


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the k voxels with the largest |relevance| (summed over channels) that two maps (C, *spatial) have in common."""
    a, b = _pair(a, b, flatten=False)
    first = top_k_voxels(a, k)
    second = top_k_voxels(b, k)
    return float(np.intersect1d(first, second, assume_unique=True).size / first.size)


def top_k_voxels(relevance: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k voxels with the largest |relevance| summed over channels (C, *spatial)."""
    spatial = np.abs(np.asarray(relevance, dtype=np.float64)).sum(0).ravel()
    k = int(k)
    if not 1 <= k <= spatial.size:
        raise ValueError(f"k must be between 1 and the number of voxels ({spatial.size}), got {k}.")
    return np.argpartition(-spatial, k - 1)[:k]


def _pair(a, b, flatten: bool = True):
    """Two arrays as float64 of the same shape (flattened when asked)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"The two maps have different shapes {a.shape} and {b.shape}; compare maps of one grid.")
    return (a.ravel(), b.ravel()) if flatten else (a, b)


# --------------------------------------------------------------------------- the registry


class SimilarityMeasure:
    """A similarity of a map to a reference map: ``prepare`` the reference once, ``compare`` a map to it many times."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    help: ClassVar[str] = ""

    def prepare(self, reference: np.ndarray) -> Any:
        """What ``compare`` needs of the reference (computed once per reference map)."""
        return reference

    def compare(self, prepared: Any, relevance: np.ndarray, k_voxels: int) -> float:
        raise NotImplementedError


_SIMILARITIES: dict[str, SimilarityMeasure] = {}


def register_similarity(cls: type[SimilarityMeasure]) -> type[SimilarityMeasure]:
    """Class decorator: add a similarity measure to the registry under its ``name``."""
    if not cls.name or cls.name in _SIMILARITIES or cls.name in ("passes", "seconds"):
        raise ValueError(f"A similarity measure needs a unique name; {cls.name!r} is empty or taken.")
    _SIMILARITIES[cls.name] = cls()
    return cls


def similarity_measures() -> tuple[SimilarityMeasure, ...]:
    """The registered similarity measures, in registration order."""
    return tuple(_SIMILARITIES.values())


def similarity_names() -> tuple[str, ...]:
    """Names of the registered similarity measures."""
    return tuple(_SIMILARITIES)


def prepare_reference(reference: np.ndarray) -> dict[str, Any]:
    """Every measure's prepared form of one reference map."""
    return {name: measure.prepare(reference) for name, measure in _SIMILARITIES.items()}


def similarities(prepared: Mapping[str, Any], relevance: np.ndarray, k_voxels: int) -> dict[str, float]:
    """Every registered measure of ``relevance`` against a prepared reference (:func:`prepare_reference`)."""
    return {name: float(measure.compare(prepared[name], relevance, k_voxels)) for name, measure in _SIMILARITIES.items()}


@register_similarity
class Spearman(SimilarityMeasure):
    """Spearman rank correlation of |relevance| (Adebayo et al. 2018's main measure)."""

    name, label = "spearman", "Spearman"
    help = "Spearman rank correlation of |relevance|"

    def prepare(self, reference: np.ndarray) -> np.ndarray:
        return ranks(np.abs(reference))

    def compare(self, prepared: np.ndarray, relevance: np.ndarray, k_voxels: int) -> float:
        return rank_correlation(prepared, np.abs(relevance))


@register_similarity
class StructuralSimilarity(SimilarityMeasure):
    """SSIM (Wang et al. 2004) of |relevance| scaled to [0, 1], mean over channels."""

    name, label = "ssim", "SSIM"
    help = "SSIM of |relevance|"

    def compare(self, prepared: np.ndarray, relevance: np.ndarray, k_voxels: int) -> float:
        return map_ssim(prepared, relevance)


@register_similarity
class TopKOverlap(SimilarityMeasure):
    """Share of the k most relevant voxels both maps share."""

    name, label = "top_k", "top-k overlap"
    help = "top-k voxel overlap"

    def compare(self, prepared: np.ndarray, relevance: np.ndarray, k_voxels: int) -> float:
        return top_k_overlap(prepared, relevance, k_voxels)
