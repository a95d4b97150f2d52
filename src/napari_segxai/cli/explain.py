"""``segxai explain``: per-class relevance maps of a case's segmentation, written as NIfTI with the case affine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from ..core.relevance_files import output_paths, write_relevance
from ._common import TerminalProgress, UserError, add_case_options, load_card, output_folder

DESCRIPTION = """\
Segment a case with a model card's network and explain it: for each chosen class, which voxels
of which input modality drove the class's output summed over a target region (the predicted
region of the class by default, a region mask, or one voxel).

Writes into --out:
  <case>_<method>_<class>.nii.gz  one 4D NIfTI per class: X x Y x Z x modalities (channels
                                  last, in the card's modality order; one channel for
                                  methods without per-modality maps such as grad_cam),
                                  on the case's grid with the case's affine
  <case>_<method>_target.nii.gz   the explained region of each class (X x Y x Z x classes, 0/1)
  <case>_<method>.json            method, parameters, target, classes, channels, files, seconds
Input files are never overwritten.

Methods (--param name=value sets their parameters):
{methods}"""


class _MethodsHelp(argparse.RawDescriptionHelpFormatter):
    """Help formatter that lists the registered attribution methods (imported only when help is shown)."""

    def _format_text(self, text: str) -> str:
        if "{methods}" in text:
            text = text.replace("{methods}", methods_help())
        return super()._format_text(text)


def methods_help() -> str:
    """Every registered method with its parameters and their defaults, one method per line."""
    from ..core.attribution import available_methods, get_method

    lines = []
    for name in available_methods():
        method = get_method(name)
        params = ", ".join(f"{key}={p.default!r}" for key, p in method.parameters.items()) or "no parameters"
        kind = "signed" if method.signed else "unsigned"
        lines.append(f"  {name:24s}{kind}; {params}")
    return "\n".join(lines)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``explain`` and its options."""
    parser = subparsers.add_parser(
        "explain",
        help="explain a case's segmentation: one relevance NIfTI per class (channels = modalities)",
        description=DESCRIPTION,
        formatter_class=_MethodsHelp,
    )
    add_case_options(parser)
    parser.add_argument(
        "--method", default="saliency", metavar="M",
        help="attribution method (listed above); default: saliency (one forward and one backward pass per class)",
    )
    parser.add_argument(
        "--classes", default=None, metavar="NAMES",
        help="comma-separated class names (or output indices) of the card, or 'all' for every class "
             "including background; default: every class with a non-zero label",
    )
    add_target_options(parser)
    parser.add_argument(
        "--output", default="logits", choices=["logits", "probabilities"],
        help="the output summed over the target: logits (default; probabilities saturate, so their "
             "gradients vanish inside confident regions) or probabilities",
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a method parameter, e.g. --param steps=64 --param baseline=blurred (repeatable)",
    )
    return parser


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


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """--target and --confident (``segxai explain`` and ``segxai trust``), read back by :func:`case_target_arguments`."""
    parser.add_argument(
        "--target", nargs="+", default=["predicted"], metavar="KIND",
        help="what is explained: 'predicted' (each class's predicted region, default), "
             "'voxel X,Y,Z' (one voxel index of the case) or 'region MASK.nii.gz' (non-zero voxels of a "
             "mask on the case's grid, the same region for every class)",
    )
    parser.add_argument(
        "--confident", type=float, default=None, metavar="THRESHOLD",
        help="with the predicted target: keep only voxels whose class probability exceeds THRESHOLD (0-1)",
    )


def case_target_arguments(args: argparse.Namespace, case) -> dict[str, Any]:
    """--target and --confident as explain_case / assess_case keyword arguments for ``case`` (UserError for mistakes)."""
    target = parse_target(args.target, args.confident)
    region_path = target.get("region")
    if region_path is not None:
        target["region"] = load_region(Path(region_path), case)
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
    raise UserError(f"Unknown target {kind!r}; choose predicted, 'voxel X,Y,Z' or 'region MASK.nii.gz'.")


def load_region(path: Path, case) -> "Any":
    """The non-zero voxels of a mask NIfTI that lies on the case's grid (UserError otherwise)."""
    import nibabel as nib
    import numpy as np

    if not path.is_file():
        raise UserError(f"The region mask {path} does not exist; give a NIfTI mask on the case's grid.")
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    while data.ndim > len(case.shape) and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape != case.shape:
        raise UserError(f"The region mask {path.name} has shape {data.shape} but the case has {case.shape}; "
                        "draw the mask on the case's grid.")
    if not np.allclose(image.affine, case.affine, atol=1e-3):
        raise UserError(f"The region mask {path.name} has a different affine from the case; "
                        "draw the mask on the case's grid.")
    return data > 0


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


def run(args: argparse.Namespace) -> int:
    """Load the case and the card, segment and explain, write one NIfTI per class and a JSON record."""
    from ..core.attribution import explain_case, get_method
    from ..core.case import load_case
    from ..core.model_card import build_network
    from ..core.segment import channel_indices, pick_device

    card = load_card(args)
    params = parse_parameters(args.method, args.param)
    method = get_method(args.method, **params)
    parse_target(args.target, args.confident)  # a mistake in --target is reported before the case is read
    case = load_case(args.case)
    channel_indices(case, card)  # a missing modality is reported before any work starts
    target = case_target_arguments(args, case)
    region_path = args.target[1] if args.target[0] == "region" else None
    classes = parse_classes(args.classes, card)

    from ..core.attribution.explain_case import class_indices

    names = [card.class_names[i] for i in class_indices(card, classes)]
    out = Path(args.out)
    paths = output_paths(case.name, method.name, names, out)
    protected = [Path(p) for p in case.source_paths] + ([Path(region_path)] if region_path else [])
    resolved = {p.resolve() for p in protected}
    for path in paths.values():
        if path.resolve() in resolved:
            raise UserError(f"Refusing to overwrite {path}: it is an input; choose another --out folder.")
    output_folder(out)

    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    with TerminalProgress(f"explaining {case.name} ({method.name})") as bar:
        result = explain_case(case, card, method=method, classes=classes, network=network, device=device,
                              output_space=args.output, progress=bar, **target)

    details = {
        "case_files": [str(p) for p in case.source_paths],
        "model_card": str(card.path),
        "model": card.name,
        "class_labels": [card.classes[i].label for i in result.class_indices],
        "voxel": list(target["voxel"]) if "voxel" in target else None,
        "region": str(region_path) if region_path else None,
        "device": str(device),
    }
    written = write_relevance(result, case.name, out, protected=protected, details=details)
    print(f"Explained {', '.join(result.class_names)} of {case.name} with {result.method} on {device} "
          f"in {result.seconds:.1f} s ({result.target_description}).")
    for name in result.class_names:
        path = written[name]
        print(f"{name} ({', '.join(result.channel_names)}, channels last): {path}")
    print(f"Record: {paths['__json__']}")
    return 0
