"""Cards of model folders (nnU-Net v2): written out for review, read back with the user's edits.

``segxai card MODEL --out card.yaml`` writes every field napari-segxai derived from the folder, with
``source`` naming the folder. Reading such a card derives the model from the folder again and then
takes the fields a user may edit: ``name``, ``description``, ``modalities`` (the names the case's
channels are matched by), the classes' ``name`` and ``color``, ``inference.overlap`` and
``inference.sw_batch_size``, ``trusted``, ``training`` and ``training_data``, and the source's
``folds``, ``checkpoint`` and ``mirroring``. The other fields are the folder's own (its plans,
labels and checkpoints): a card that changes one is refused with a sentence, as they cannot be
changed without retraining.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

from .card import _REQUIRED, ClassInfo, ModelCard, _Checker

#: The kinds of model folder a card's ``source`` may name.
SOURCE_KINDS = ("nnunet",)
_SOURCE_FIELDS = ("kind", "folder", "configuration", "folds", "checkpoint", "mirroring")
_EDITABLE_INFERENCE = ("overlap", "sw_batch_size")


def card_mapping(card: ModelCard) -> dict[str, Any]:
    """The card as the mapping ``segxai card`` writes (every derived field; paths absolute)."""
    mapping: dict[str, Any] = {"name": card.name, "description": card.description}
    if card.source is not None:
        mapping["source"] = card.source.settings()
    mapping.update({
        "architecture": card.architecture,
        "trusted": card.trusted,
        "spatial_dims": card.spatial_dims,
    })
    if card.slice_axis is not None:
        mapping["slice_axis"] = card.slice_axis
    mapping["modalities"] = list(card.modalities)
    mapping["classes"] = [{"name": c.name, "label": c.label, "color": c.color} for c in card.classes]
    mapping["activation"] = card.activation
    mapping["preprocessing"] = {
        "orientation": card.orientation,
        "spacing": None if card.spacing is None else list(card.spacing),
        "spacing_policy": card.spacing_policy,
        "normalization": card.normalization,
    }
    mapping["inference"] = {"roi_size": list(card.roi_size), "overlap": card.overlap,
                            "sw_batch_size": card.sw_batch_size, "mode": card.mode}
    if card.source is None:
        mapping["kwargs"] = dict(card.kwargs)
        mapping["weights"] = str(card.weights)
    for key in ("training", "training_data"):
        if getattr(card, key) is not None:
            mapping[key] = str(getattr(card, key))
    return mapping


def card_over_source(raw: dict, path: Path, *, trusted: bool = False, folds: Optional[Sequence[str] | str] = None,
                     checkpoint: Optional[str] = None, mirroring: Optional[bool] = None) -> ModelCard:
    """The card at ``path`` whose ``source`` names a model folder: the folder's card with the card's edits.

    ``folds``, ``checkpoint`` and ``mirroring`` given here (the command line) win over the card's.
    """
    from .nnunet_card import nnunet_card

    check = _Checker(path)
    source = raw.get("source")
    if not isinstance(source, dict):
        check.fail("source", f"must be a mapping with kind and folder, not {source!r}")
    check.known_fields(source, _SOURCE_FIELDS, "source")
    kind = check.choice(source, "kind", SOURCE_KINDS, default=_REQUIRED, where="source.kind")
    folder = check.existing_path(source, "folder", "model folder")
    trusted = trusted or check.boolean(raw, "trusted", default=False)
    card_folds = source.get("folds", "all")
    if card_folds != "all" and (not isinstance(card_folds, list) or not card_folds):
        check.fail("source.folds", f"is {card_folds!r}; give all or a list of fold numbers")
    derived = nnunet_card(
        folder, folds=folds or (card_folds if card_folds == "all" else [str(f) for f in card_folds]),
        checkpoint=checkpoint or check.choice(source, "checkpoint", ("final", "best"), default="final",
                                              where="source.checkpoint"),
        mirroring=check.boolean(source, "mirroring", default=True, where="source.mirroring") if mirroring is None
        else mirroring,
        trusted=trusted, card_path=path,
    ) if kind == "nnunet" else None
    if source.get("configuration") not in (None, derived.source.configuration):
        check.fail("source.configuration", f"is {source['configuration']!r} but the folder {folder} holds the "
                                           f"{derived.source.configuration} configuration")
    return _apply_edits(raw, derived, check)


def _apply_edits(raw: dict, derived: ModelCard, check: _Checker) -> ModelCard:
    """``derived`` with the editable fields of ``raw``; a derived field that differs is refused."""
    written = card_mapping(derived)
    check.known_fields(raw, tuple(written) + ("training", "training_data"), None)
    for key in ("architecture", "spatial_dims", "slice_axis", "activation"):
        if key in raw and raw[key] != written.get(key):
            _refuse(check, key, raw[key], written.get(key), derived)
    for key, value in (raw.get("preprocessing") or {}).items():
        if key not in written["preprocessing"] or value != written["preprocessing"][key]:
            _refuse(check, f"preprocessing.{key}", value, written["preprocessing"].get(key), derived)
    inference = raw.get("inference") or {}
    for key in ("roi_size", "mode"):
        if key in inference and inference[key] != written["inference"][key]:
            _refuse(check, f"inference.{key}", inference[key], written["inference"][key], derived)
    edits: dict[str, Any] = {}
    if "name" in raw:
        edits["name"] = check.string(raw, "name")
    if "description" in raw:
        edits["description"] = check.string(raw, "description", default="")
    if "modalities" in raw:
        modalities = tuple(m.lower() for m in check.string_list(raw, "modalities"))
        if len(modalities) != len(derived.modalities) or len(set(modalities)) != len(modalities):
            check.fail("modalities", f"lists {list(modalities)}; give {len(derived.modalities)} different names, one "
                                     f"per input channel of the model (it has {', '.join(derived.modalities)})")
        edits["modalities"] = modalities
    if "classes" in raw:
        classes = check.classes(raw)
        if [c.label for c in classes] != [c.label for c in derived.classes]:
            check.fail("classes", f"has label values {[c.label for c in classes]} but the model writes "
                                  f"{[c.label for c in derived.classes]}; rename or recolour the classes, keep their values")
        edits["classes"] = tuple(ClassInfo(c.name, c.label, c.color) for c in classes)
    if "overlap" in inference:
        overlap = check.number(inference, "overlap", default=derived.overlap, where="inference.overlap")
        if not 0.0 <= overlap < 1.0:
            check.fail("inference.overlap", f"is {overlap}; use a fraction in [0, 1)")
        edits["overlap"] = overlap
    if "sw_batch_size" in inference:
        edits["sw_batch_size"] = check.integer(inference, "sw_batch_size", where="inference.sw_batch_size")
    for key, what in (("training", "training manifest"), ("training_data", "training data folder")):
        if raw.get(key) is not None:
            edits[key] = check.existing_path(raw, key, what)
    return dataclasses.replace(derived, **edits)


def _refuse(check: _Checker, key: str, value, derived_value, card: ModelCard) -> None:
    check.fail(key, f"is {value!r} but the model folder {card.source.folder} gives {derived_value!r}; this field "
                    "comes from the folder's plans, labels and checkpoints and cannot be changed in a card "
                    "(remove it, or retrain the model)")
