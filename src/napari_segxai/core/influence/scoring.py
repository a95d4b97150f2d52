"""How per-checkpoint gradient products become one TracIn score: raw, or renormalised.

Raw TracIn (Pruthi et al. 2020) sums ``lr_t * g_test . g_train`` over the checkpoints. Training
regions with large gradient norms then top the proponents and opponents of whatever is asked.
Two renormalisations from the literature remove that:

- ``cosine``: ``lr_t * cos(g_test, g_train)``, the gradient-aggregated similarity (GAS) of
  Hammoudeh and Lowd, "Identifying a training-set attack's target using renormalized influence
  estimation" (2022);
- ``relative``: ``lr_t * g_test . g_train / |g_train|``, influence relative to the training
  example's own gradient size per checkpoint, in the spirit of RelatIF (Barshan et al. 2020).

- ``specific``: relative scores of the query's gradient minus the mean gradient of the training
  regions of its class (per checkpoint): what this case asks of a training region beyond what
  every region of its class asks. Raw and relative TracIn rank much the same training regions
  for any query of a class; this removes the part they share. It needs every training region's
  gradient at once, so only the indexed engine offers it.

All keep the sign (proponent or opponent); a region without gradient scores 0.
"""

from __future__ import annotations

from typing import Sequence

import torch

SCORINGS = ("raw", "cosine", "relative", "specific")
#: The default, chosen from benchmarks/influence.py --stages specificity (benchmarks/RESULTS.md).
DEFAULT_SCORING = "relative"


def check_scoring(scoring: str) -> str:
    """``scoring`` if known, else ValueError listing the choices."""
    if scoring not in SCORINGS:
        raise ValueError(f"Unknown TracIn scoring {scoring!r}; use one of {', '.join(SCORINGS)}.")
    return scoring


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
