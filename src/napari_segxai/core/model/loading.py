"""Open a model from what the user points at: a card YAML file, an nnU-Net v2 model folder or a MONAI bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from . import bundle, nnunet
from .card import ModelCard, parse_model_card, read_card_yaml


def load_model_card(path: str | Path, *, trusted: bool = False, folds: Optional[Sequence[str] | str] = None,
                    checkpoint: Optional[str] = None, mirroring: Optional[bool] = None) -> ModelCard:
    """The model at ``path``: a card YAML file, a folder holding ``card.yaml``, an nnU-Net v2 model folder or a MONAI bundle.

    ``trusted`` marks the model's files as trusted (pickles and code may run); ``folds``, ``checkpoint``
    and ``mirroring`` choose what of an nnU-Net model is used (as ``nnUNetv2_predict`` does; default: all
    folds, the final checkpoint, mirroring on, or what a card written for the model says).
    """
    import dataclasses

    from .nnunet_card import nnunet_card

    path = Path(path).expanduser().resolve()
    if bundle.is_bundle_folder(path):
        return bundle.bundle_card(path, trusted=trusted)
    if nnunet.is_nnunet_folder(path):
        return nnunet_card(path, folds=folds or "all", checkpoint=checkpoint or "final",
                           mirroring=True if mirroring is None else mirroring, trusted=trusted)
    raw, path = read_card_yaml(path)
    if isinstance(raw, dict) and "source" in raw:
        from .sourced import card_over_source

        return card_over_source(raw, path, trusted=trusted, folds=folds, checkpoint=checkpoint, mirroring=mirroring)
    card = parse_model_card(raw, path)
    return dataclasses.replace(card, trusted=True) if trusted and not card.trusted else card
