"""Dice of a model against reference labels: BraTS regions, largest component, held-out generated cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..progress import CancelFn, ProgressFn, step


REGIONS: dict[str, tuple[int, ...]] = {"whole_tumour": (1, 2, 4), "tumour_core": (1, 4), "enhancing": (4,)}
"""BraTS evaluation regions: label values that make up each."""


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    p, r = prediction.astype(bool), reference.astype(bool)
    total = int(p.sum()) + int(r.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, r).sum()) / total


def region_dice(prediction: np.ndarray, reference: np.ndarray, regions: dict[str, tuple[int, ...]] = REGIONS) -> dict[str, float]:
    """Dice per region, each region the union of its label values, in both label volumes."""
    return {name: dice(np.isin(prediction, values), np.isin(reference, values)) for name, values in regions.items()}


def largest_component(labels: np.ndarray) -> np.ndarray:
    """The label volume with everything outside the largest connected non-zero component set to 0."""
    from scipy import ndimage

    components, n = ndimage.label(labels > 0)
    if n <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.where(components == int(np.argmax(sizes)), labels, 0).astype(labels.dtype)


FALSE_POSITIVE = "false_positive_share"
"""Result column: the share of the predicted tumour that lies in components touching no reference tumour voxel."""


def false_positive_voxels(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Predicted tumour voxels (label > 0) in connected components that touch no reference tumour voxel."""
    from scipy import ndimage

    predicted = prediction > 0
    components, _ = ndimage.label(predicted)
    touching = np.unique(components[predicted & (reference > 0)])
    return predicted & ~np.isin(components, touching)


def false_positive_share(prediction: np.ndarray, reference: np.ndarray, where: np.ndarray | None = None) -> float:
    """Share of the predicted tumour voxels (label > 0) in connected components that touch no reference tumour voxel.

    0 when nothing is predicted. A model can find the tumour whole and still score a low Dice because of
    a separate false component elsewhere; this says how much of the prediction that is. With ``where``
    (a boolean mask), only the false voxels inside it count (the shares of complementary masks add up).
    """
    return false_positive_shares(prediction, reference, () if where is None else (where,))[-1]


def false_positive_shares(prediction: np.ndarray, reference: np.ndarray, within=()) -> tuple[float, ...]:
    """:func:`false_positive_share` overall, then inside each mask of ``within``, labelling the components once."""
    total = int(np.count_nonzero(prediction > 0))
    if total == 0:
        return (0.0,) * (1 + len(within))
    false = false_positive_voxels(prediction, reference)
    return tuple(int(np.count_nonzero(false if where is None else false & where)) / total
                 for where in (None, *within))


FALSE_POSITIVE_CEREBELLUM = "false_positive_cerebellar_share"
"""Generated cases: the share of the predicted tumour in false components that lies in the cerebellum."""


HELD_OUT_SEED_START = 900_000
"""First seed of the held-out generated cases used for evaluation (never used for training)."""


def evaluate_generated(
    card,
    seeds: Sequence[int],
    *,
    network: Optional[torch.nn.Module] = None,
    device: Optional[str] = None,
    size: str = "full",
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> list[dict]:
    """Region Dice of the card's model on generated cases, raw and after keeping the largest component, and the
    false-positive share, all of it and in the cerebellum."""
    from ..model.card import build_network
    from ..model.device import pick_device
    from ..model.inference import segment
    from .synth import DEMO_SEED, generate_case

    training = set()
    if card.training is not None and Path(card.training).is_file():
        recorded = json.loads(Path(card.training).read_text())["training_set"]
        training = {int(s) for s in recorded.get("seeds", ())}  # generated only, or generated beside a dataset:
        training |= {int(c["seed"]) for c in recorded.get("cases", ()) if "seed" in c}
    overlap = sorted(training.intersection(int(s) for s in seeds))
    if overlap:
        raise ValueError(f"Seeds {overlap[:5]} were used to train {card.name}; evaluate on held-out seeds.")
    device = str(pick_device(device))
    network = network if network is not None else build_network(card, device)
    rows = []
    for i, seed in enumerate(seeds):
        synth = generate_case(int(seed), size=size)
        seg = segment(synth.case, card, network=network, device=device)
        rows.append(_dice_row(synth.case.name, seg, synth.case.label, cerebellum=synth.cerebellum > 0.5,
                              seed=int(seed), demo=int(seed) == DEMO_SEED))
        step(i + 1, len(seeds), progress, should_cancel)
    return rows


def _dice_row(name: str, seg, reference: np.ndarray, cerebellum: np.ndarray | None = None, **extra) -> dict:
    """One result row: Dice per region, raw and largest-component, the false-positive share (and, given the
    ``cerebellum`` mask, its part there) and the segmentation time."""
    row = {"case": name, **extra, "seconds": round(seg.seconds, 2)}
    for region, value in region_dice(seg.labels, reference).items():
        row[region] = round(value, 4)
    for region, value in region_dice(largest_component(seg.labels), reference).items():
        row[f"{region}_lcc"] = round(value, 4)
    shares = false_positive_shares(seg.labels, reference, () if cerebellum is None else (cerebellum,))
    row[FALSE_POSITIVE] = round(shares[0], 4)
    if cerebellum is not None:
        row[FALSE_POSITIVE_CEREBELLUM] = round(shares[1], 4)
    return row


def evaluate_case(case, reference: np.ndarray, card, *, network=None, device: Optional[str] = None) -> dict:
    """Region Dice of the card's model on one case against a reference label volume on the case's grid."""
    from ..model.inference import segment

    if reference.shape != case.shape:
        raise ValueError(f"The reference label of {case.name} has shape {reference.shape}, the case {case.shape}; give a label on the case's grid.")
    seg = segment(case, card, network=network, device=device)
    return _dice_row(case.name, seg, reference)


def summarize(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean, SD, min and count of every Dice column (and the false-positive shares) over result rows."""
    columns = [k for k in rows[0] if k.startswith(tuple(REGIONS)) or k in (FALSE_POSITIVE, FALSE_POSITIVE_CEREBELLUM)] if rows else []
    out = {}
    for column in columns:
        values = np.array([r[column] for r in rows], dtype=float)
        out[column] = {"mean": round(float(values.mean()), 4), "sd": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
                       "min": round(float(values.min()), 4), "n": int(len(values))}
    return out
