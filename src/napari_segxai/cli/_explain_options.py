"""Options of the commands that explain a case (``explain``, ``trust``, ``evaluate``, ``report``, ``cohort``): method parameters, classes, targets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from ..core.io.nifti import load_region_mask
from ._common import UserError

# The core's values (core.model.uncertainty), spelled out so that building the parsers imports no torch.
UNCERTAINTY_MODES = ("checkpoints", "flips", "dropout")
DEFAULT_SAMPLES = 8
DEFAULT_THRESHOLD = 0.5


def parse_parameters(method: str, items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings as the method's typed parameters (UserError for unknown keys or bad values)."""
    from ..core.attribution import method_class

    declared = method_class(method).parameters
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--param {item!r} is not KEY=VALUE; write e.g. --param steps=64.")
        if key not in declared:
            known = ", ".join(declared) or "none"
            raise UserError(f"{method} has no parameter {key!r}; its parameters are: {known}.")
        params[key] = _typed(method, key, text.strip(), declared[key])
    return params


def _typed(method: str, key: str, text: str, parameter) -> Any:
    """The text of a parameter converted to the type of its default (or of its choices)."""
    example = parameter.choices[0] if parameter.choices else parameter.default
    if isinstance(example, bool):
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise UserError(f"{method}: {key} must be true or false, got {text!r}.")
    if isinstance(example, (int, float)):
        try:
            number = float(text)
        except ValueError:
            raise UserError(f"{method}: {key} must be a number, got {text!r}.") from None
        if isinstance(example, int):
            if number != int(number):
                raise UserError(f"{method}: {key} must be a whole number, got {text!r}.")
            return int(number)
        return number
    return text


def add_uncertainty_option(parser: argparse.ArgumentParser, purpose: str, default: str | None = None) -> None:
    """--uncertainty {checkpoints,flips,dropout} and --dropout-samples (``segment``; ``explain --target uncertain``)."""
    parser.add_argument(
        "--uncertainty", default=default, choices=UNCERTAINTY_MODES,
        help=f"{purpose}: checkpoints (the training checkpoints the model recorded, or an nnU-Net model's "
             f"folds), flips (test-time flips along every spatial axis, 2^D runs) or dropout (MC dropout, for "
             f"networks with dropout layers){'' if default is None else f'; default {default}'}",
    )
    parser.add_argument(
        "--dropout-samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
        help=f"with --uncertainty dropout: the number of MC dropout runs (default {DEFAULT_SAMPLES})",
    )


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """--target and --confident (``segxai explain`` and ``segxai trust``), read back by :func:`case_target_arguments`."""
    parser.add_argument(
        "--target", nargs="+", default=["predicted"], metavar="KIND",
        help="what is explained: 'predicted' (each class's predicted region, default), "
             "'voxel X,Y,Z' (one voxel index of the case), 'region MASK.nii.gz' (non-zero voxels of a "
             "mask on the case's grid, the same region for every class) or 'uncertain [THRESHOLD]' (the voxels "
             f"whose predictive entropy exceeds THRESHOLD nats, default {DEFAULT_THRESHOLD}, the same region for "
             "every class: why is the model unsure here; the ensemble is --uncertainty's)",
    )
    parser.add_argument(
        "--confident", type=float, default=None, metavar="THRESHOLD",
        help="with the predicted target: keep only voxels whose class probability exceeds THRESHOLD (0-1)",
    )
    add_uncertainty_option(parser, "with --target uncertain: the ensemble whose entropy picks the voxels",
                           default="flips")


def case_target_arguments(args: argparse.Namespace, case) -> dict[str, Any]:
    """--target and --confident as explain_case / assess_case keyword arguments for ``case`` (UserError for mistakes)."""
    target = parse_target(args.target, args.confident)
    if target["target"] == "uncertain":
        return {"target": "region", "region": uncertain_voxels(args, case, target["threshold"])}
    region_path = target.get("region")
    if region_path is not None:
        try:
            target["region"] = load_region_mask(Path(region_path), case)
        except ValueError as err:
            raise UserError(str(err)) from None
    voxel = target.get("voxel")
    if voxel is not None and (len(voxel) != len(case.shape)
                              or any(not 0 <= v < n for v, n in zip(voxel, case.shape))):
        raise UserError(f"Voxel {','.join(map(str, voxel))} is not a voxel of the case (shape "
                        f"{' x '.join(map(str, case.shape))}); give {len(case.shape)} coordinates inside it.")
    return target


def parse_target(values: Sequence[str], confident: float | None) -> dict[str, Any]:
    """The --target words as explain_case keyword arguments (region given as a path)."""
    kind, rest = values[0], list(values[1:])
    if kind == "predicted":
        if rest:
            raise UserError("--target predicted takes no value; write just --target predicted.")
        if confident is not None and not 0.0 <= confident < 1.0:
            raise UserError(f"--confident must be a probability in [0, 1), got {confident}.")
        return {"target": "predicted", "confident": confident is not None,
                "threshold": 0.5 if confident is None else float(confident)}
    if confident is not None:
        raise UserError("--confident applies only to --target predicted; leave it out for voxel and region targets.")
    if kind == "voxel":
        if len(rest) != 1:
            raise UserError("--target voxel needs one voxel index, e.g. --target voxel 120,96,70.")
        try:
            voxel = tuple(int(v) for v in rest[0].split(","))
        except ValueError:
            raise UserError(f"--target voxel needs whole numbers separated by commas, got {rest[0]!r}.") from None
        return {"target": "voxel", "voxel": voxel}
    if kind == "region":
        if len(rest) != 1:
            raise UserError("--target region needs one mask file, e.g. --target region tumour_mask.nii.gz.")
        return {"target": "region", "region": Path(rest[0])}
    if kind == "uncertain":
        if len(rest) > 1:
            raise UserError("--target uncertain takes at most one entropy threshold, e.g. --target uncertain 0.5.")
        try:
            threshold = float(rest[0]) if rest else DEFAULT_THRESHOLD
        except ValueError:
            raise UserError(f"--target uncertain needs an entropy threshold in nats, e.g. 0.5, got {rest[0]!r}.") from None
        if not threshold >= 0:
            raise UserError(f"--target uncertain needs an entropy threshold of 0 or more nats, got {rest[0]}.")
        return {"target": "uncertain", "threshold": threshold}
    raise UserError(f"Unknown target {kind!r}; choose predicted, 'voxel X,Y,Z', 'region MASK.nii.gz' or "
                    "'uncertain [THRESHOLD]'.")


def uncertain_voxels(args: argparse.Namespace, case, threshold: float):
    """The case's voxels whose entropy (of --uncertainty's ensemble) exceeds ``threshold``; says how many."""
    from ..core.model.uncertainty import max_entropy, uncertain_region, uncertainty
    from ..core.model.uncertainty_members import plan_members
    from ._common import TerminalProgress, load_card

    if getattr(args, "dropout_samples", 2) < 2:
        raise UserError(f"--dropout-samples {args.dropout_samples} is too few for MC dropout; give 2 or more.")
    card = load_card(args)
    largest = max_entropy(len(card.classes), card.activation)
    if threshold >= largest:
        raise UserError(f"--target uncertain {threshold:g} is not below {largest:.3f} nats, the largest entropy "
                        f"{len(card.classes)} classes allow; give a smaller threshold (default {DEFAULT_THRESHOLD}).")
    device = None if args.device in (None, "auto") else args.device
    plan_members(case, card, args.uncertainty, device=device or "cpu", samples=args.dropout_samples)  # refusals first
    with TerminalProgress(f"{args.uncertainty} uncertainty of {case.name}") as bar:
        measured = uncertainty(case, card, args.uncertainty, device=device, samples=args.dropout_samples, progress=bar)
    region = uncertain_region(measured, threshold)
    print(f"Uncertain voxels: {int(region.sum())} with entropy above {threshold:g} nats ({measured.describe()}).")
    return region


def parse_classes(text: str | None, card) -> list[int | str] | None:
    """The --classes value as explain_case's ``classes`` (None: every class with a non-zero label)."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return list(range(len(card.classes)))
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--classes is empty; give class names separated by commas, or 'all'.")
    return names
