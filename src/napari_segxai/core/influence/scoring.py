"""How per-checkpoint gradient products become one TracIn score: raw, or renormalised.

Raw TracIn (Pruthi et al. 2020) sums ``lr_t * g_test . g_train`` over the checkpoints. Training
regions with large gradient norms then top the proponents and opponents of whatever is asked.
Two renormalisations from the literature remove that:

- ``cosine``: ``lr_t * cos(g_test, g_train)``, the gradient-aggregated similarity (GAS) of
  Hammoudeh and Lowd, "Identifying a training-set attack's target using renormalized influence
  estimation" (2022);
- ``relative``: ``lr_t * g_test . g_train / |g_train|``, influence relative to the training
  example's own gradient size per checkpoint, in the spirit of RelatIF (Barshan et al. 2020).

- ``specific``: relative scores after removing, from the query's and every training region's
  gradient, what all training regions share (per checkpoint): their mean and their
  :data:`COMMON_MODES` strongest principal directions (fewer for small training sets, see
  :func:`common_mode_count`). Raw and relative TracIn rank much the same training regions for any
  query, because every gradient is dominated by the directions that all regions push together;
  removing them keeps what this case asks of a region beyond what every case asks. This is the
  projection form of preconditioning by the training gradients' covariance (influence functions
  with an empirical-Fisher Hessian; TRAK's ``(Phi^T Phi)^-1``), with the damping taken to zero
  inside the common subspace and to infinity outside. It needs every training region's gradient
  at once, so only the indexed engine offers it.

All keep the sign (proponent or opponent); a region without gradient scores 0.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

SCORINGS = ("raw", "cosine", "relative", "specific")
#: The default, chosen from benchmarks/influence.py --stages specificity (benchmarks/RESULTS.md).
DEFAULT_SCORING = "specific"
#: The exact engine's default: ``specific`` needs every training gradient at once; ``relative`` was next best.
EXACT_DEFAULT_SCORING = "relative"
#: Principal directions of the training gradients removed by ``specific`` (chosen on held-out
#: generated queries apart from the benchmark's, benchmarks/RESULTS.md).
COMMON_MODES = 12


def check_scoring(scoring: Optional[str], engine: str = "indexed") -> str:
    """``scoring`` if known and offered by ``engine`` (None: the engine's default), else ValueError with the choices."""
    if scoring is None:
        return DEFAULT_SCORING if engine == "indexed" else EXACT_DEFAULT_SCORING
    if scoring not in SCORINGS:
        raise ValueError(f"Unknown TracIn scoring {scoring!r}; use one of {', '.join(SCORINGS)}.")
    if engine == "exact" and scoring == "specific":
        raise ValueError("Specific scores need every training region's gradient at once: use the indexed engine.")
    return scoring


def common_mode_count(regions: int) -> int:
    """Directions ``specific`` removes for ``regions`` non-empty training regions: COMMON_MODES, at most a quarter of them."""
    return max(0, min(COMMON_MODES, int(regions) // 4))


def common_modes(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (T, d) and strongest principal directions (T, r, d) of per-checkpoint training rows (T, M, d)."""
    rows = rows.double()
    mean = rows.mean(1)
    r = common_mode_count(rows.shape[1])
    directions = []
    for t in range(rows.shape[0]):
        _, _, vh = torch.linalg.svd(rows[t] - mean[t], full_matrices=False)
        directions.append(vh[:r])
    return mean, torch.stack(directions)


def remove_common_modes(rows: torch.Tensor, mean: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Rows (T, ..., d) less the mean (T, d), projected off the directions (T, r, d)."""
    shape = rows.shape
    flat = rows.double().reshape(shape[0], -1, shape[-1]) - mean[:, None]
    flat = flat - torch.einsum("tmr,trd->tmd", torch.einsum("tmd,trd->tmr", flat, directions), directions)
    return flat.reshape(shape)


def _safe(norms: torch.Tensor) -> torch.Tensor:
    return torch.where(norms > 0, norms, torch.ones_like(norms))


def scored(products: torch.Tensor, learning_rates: Sequence[float], test_norms: torch.Tensor,
           train_norms: torch.Tensor, scoring: str) -> torch.Tensor:
    """(A, *B) scores from per-checkpoint products (T, A, *B), test norms (T, A) and training norms (T, *B)."""
    check_scoring(scoring)
    lrs = torch.as_tensor(list(learning_rates), dtype=torch.float64)
    extra = products.ndim - 2
    if scoring in ("cosine", "relative", "specific"):
        products = products / _safe(train_norms.double())[:, None]
    if scoring == "cosine":
        products = products / _safe(test_norms.double()).reshape(test_norms.shape + (1,) * extra)
    return torch.einsum("t,ta...->a...", lrs, products.double())
