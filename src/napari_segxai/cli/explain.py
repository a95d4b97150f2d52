"""``segxai explain``: per-class relevance maps of a case's segmentation, written as NIfTI with the case affine."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.io.relevance import output_paths, write_relevance
from ._common import (TerminalProgress, UserError, add_case_options, add_format_option, check_format, load_card,
                      open_case, output_folder, say_cost)
from ._explain_options import add_target_options, case_target_arguments, parse_classes, parse_parameters, parse_target

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
With --format dicom (a DICOM study as CASE), instead of the NIfTI maps:
  <case>_<method>_<class>_<channel>.dcm  one DICOM Parametric Map per class and input channel,
                                  over the study's reference series, described by method, class
                                  and channel (the JSON record is written too)
Input files are never overwritten.

Methods (--param name=value sets their parameters):
{methods}"""


def trust_line(case, card, method: str, *, check: bool, device) -> str:
    """The method's measured trust for this model (measured now when ``check`` asks and it never was)."""
    from ..core.trust.verdict import measure_verdict, read_verdict

    verdict = read_verdict(card, method)
    if verdict is None and check:
        with TerminalProgress(f"checking the trust of {method}") as bar:
            verdict = next(iter(measure_verdict(case, card, [method], device=device, progress=bar)), None)
    if verdict is None:
        return (f"Trust of {method} for this model: not checked; add --check-trust, or run "
                f"segxai trust CASE --methods {method}, to measure it once for this model.")
    return verdict.sentence()


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
    add_format_option(parser, "one Parametric Map per class and channel")
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
    parser.add_argument(
        "--check-trust", action="store_true",
        help="when the method's trust for this model was never measured, measure it now on this case (model "
             "parameter randomisation and faithfulness; minutes on a CPU) and keep it for every later map",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the case and the card, segment and explain, write one NIfTI per class and a JSON record."""
    from ..core.attribution import explain_case, get_method
    from ..core.attribution.targets import skipped_line
    from ..core.model.card import build_network
    from ..core.model.preprocess import channel_indices
    from ..core.model.device import pick_device

    card = load_card(args)
    params = parse_parameters(args.method, args.param)
    method = get_method(args.method, **params)
    parse_target(args.target, args.confident)  # a mistake in --target is reported before the case is read
    case = open_case(args, card)
    channel_indices(case, card)  # a missing modality is reported before any work starts
    check_format(args, case)
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
                              output_space=args.output, progress=bar, sequences=True, before=say_cost, **target)

    details = {
        "case_files": case.shown_sources(),
        "model_card": str(card.path),
        "model": card.name,
        "class_labels": [card.classes[i].label for i in result.class_indices],
        "voxel": list(target["voxel"]) if "voxel" in target else None,
        "region": str(region_path) if region_path else None,
        "device": str(device),
        "sequence_shapley": {name: result.sequences.for_class(name) for name in result.class_names},
        "skipped_not_predicted": list(result.skipped),
        "zero_everywhere": list(result.zero_classes),
        "cost_estimate": result.cost.record() if result.cost is not None else None,
    }
    dicom = {}
    if args.format in ("dicom", "both"):
        from ..core.io.dicom_results import write_relevance_dicom

        dicom = write_relevance_dicom(result, case, out)
        details["dicom_files"] = {f"{name}/{channel}": str(path) for (name, channel), path in dicom.items()}
    written = write_relevance(result, case.name, out, protected=protected, details=details,
                              maps=args.format in ("nifti", "both"))
    if result.skipped:
        print(f"{case.name}: {skipped_line(result.skipped)}.")
    if result.zero_classes:
        print(f"{case.name}: {result.zero_line()}.")
    print(f"Explained {', '.join(result.class_names)} of {case.name} with {result.method} on {device} "
          f"in {result.seconds:.1f} s ({result.target_description}).")
    for name in result.class_names if args.format in ("nifti", "both") else ():
        print(f"{name} ({', '.join(result.channel_names)}, channels last): {written[name]}")
    for (name, channel), path in dicom.items():
        print(f"{name}, {channel} (DICOM Parametric Map): {path}")
    print("Which sequence carries each class (exact Shapley values of the sequences, modality_shapley):")
    for line in result.sequences.lines():
        print(f"  {line}")
    print(trust_line(case, card, result.method, check=args.check_trust, device=device))
    print(f"Record: {paths['__json__']}")
    return 0
