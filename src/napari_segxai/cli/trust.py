"""``segxai trust``: can a case's explanations be trusted? Sanity checks, quality metrics and (generated cases) ground truth."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from ..core.files import write_text
from ._common import TerminalProgress, UserError, add_case_options, load_card, output_folder
from .explain import add_target_options

DESCRIPTION = """\
Measure how far the relevance maps of a case's segmentation deserve trust, for one or more
attribution methods. The target is each class's output summed over its predicted region, on a
crop around the regions (as `segxai explain` uses for non-additive methods).

  sanity   model parameter randomisation (Adebayo et al. 2018): re-initialise the network's layers
           from the output towards the input (cascading) and one at a time (independent),
           recompute each map and compare it with the original (Spearman of |relevance|, SSIM,
           top-k overlap). A method passes when the fully randomised network's map has a rank
           correlation below 0.5 with the original.
  metrics  faithfulness correlation, deletion curve and its area (and a random order's),
           max-sensitivity under small input noise, complexity (share of voxels above 10% of the
           maximum, entropy), seconds per explanation and per metric.
  data     (only when asked: --checks sanity,metrics,data) data randomisation: twins of the
           card's architecture trained briefly on generated cases with true and with permuted
           labels; maps of the model and both twins compared pairwise.
  --ground-truth (generated cases, with ground_truth.json): explanation precision against the
           true lesion, next to Sobel/Laplace edge filters and a random-weights network, and the
           share of relevance on the modality that carries each class.

Writes into --out: sanity.csv, sanity_verdicts.csv, sanity.png, metrics.csv, deletion.png,
data_randomisation.csv (with the data check), groundtruth_precision.csv, groundtruth_modality.csv (with --ground-truth) and trust.json.
See docs/trust.md for what each number means."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``trust`` and its options."""
    parser = subparsers.add_parser(
        "trust", help="sanity checks, quality metrics and ground-truth precision of explanation methods on a case",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_case_options(parser)
    parser.add_argument(
        "--methods", default="saliency,gradient_x_input,integrated_gradients", metavar="M1,M2",
        help="comma-separated attribution methods (see `segxai explain --help`); "
             "default: saliency,gradient_x_input,integrated_gradients",
    )
    add_measure_options(parser)
    add_target_options(parser)
    parser.add_argument(
        "--ground-truth", action="store_true",
        help="also run the ground-truth benchmark (the case must be a generated case folder with ground_truth.json)",
    )
    return parser


def add_measure_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and tune the trust measures (``segxai trust`` and ``segxai evaluate --methods``)."""
    parser.add_argument(
        "--param", action="append", default=[], metavar="METHOD:KEY=VALUE",
        help="a method parameter, e.g. --param integrated_gradients:steps=16 (repeatable)",
    )
    parser.add_argument(
        "--classes", default=None, metavar="NAMES",
        help="comma-separated class names (or output indices); default: every class with a non-zero label",
    )
    parser.add_argument(
        "--checks", default="sanity,metrics", metavar="LIST",
        help="which measures to run: sanity, metrics, data (default: sanity,metrics; data trains two small "
             "twins of the model, minutes on a CPU)",
    )
    parser.add_argument(
        "--modes", default="cascading,independent", metavar="LIST",
        help="randomisation modes: cascading, independent, or both (default: both)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=8, metavar="N",
        help="randomise at most N evenly spaced depths (the last always randomises every layer); default 8",
    )
    from ..core.trust import available_metrics

    metrics = ",".join(available_metrics())
    parser.add_argument(
        "--metrics", default=metrics, metavar="LIST",
        help=f"quality metrics to run (default: every registered one: {metrics})",
    )
    parser.add_argument("--subsets", type=int, default=32, metavar="N",
                        help="faithfulness: number of random voxel subsets (default 32)")
    parser.add_argument("--subset", type=float, default=0.1, metavar="SHARE",
                        help="faithfulness: share of the crop's voxels in each subset (default 0.1)")
    parser.add_argument("--deletion-steps", type=int, default=20, metavar="N",
                        help="deletion curve: number of equal steps from intact to all removed (default 20)")
    parser.add_argument("--noise-samples", type=int, default=8, metavar="N",
                        help="max-sensitivity: number of noisy inputs, each explained again (default 8)")
    parser.add_argument("--noise-radius", type=float, default=0.05, metavar="R",
                        help="max-sensitivity: uniform noise of +-R times each channel's standard deviation (default 0.05)")
    parser.add_argument("--baseline", default="zeros", choices=["zeros", "minimum", "blurred"],
                        help="what a removed voxel becomes (default zeros: the brain's mean after z-scoring)")
    parser.add_argument("--data-steps", type=int, default=100, metavar="N",
                        help="data randomisation: training steps of each twin (default 100)")
    parser.add_argument("--data-cases", type=int, default=8, metavar="N",
                        help="data randomisation: generated training cases (default 8)")
    parser.add_argument("--margin", type=int, default=None, metavar="VOXELS",
                        help="crop margin around the predicted regions on the model's grid; default half a window")
    parser.add_argument("--seed", type=int, default=0, help="seed of randomisation, subsets, noise (default 0)")


def parse_list(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma-separated option value, each item checked against ``allowed``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"{option} is empty; give one or more of {', '.join(allowed)}.")
    bad = [t for t in items if t not in allowed]
    if bad:
        raise UserError(f"{option}: {bad[0]!r} is not one of {', '.join(allowed)}.")
    return items


def build_methods(names: str, params: Sequence[str]) -> list:
    """Attribution method instances from --methods and --param METHOD:KEY=VALUE."""
    from ..core.attribution import available_methods, get_method
    from .explain import parse_parameters

    chosen = parse_list(names, available_methods(), "--methods")
    per_method: dict[str, list[str]] = {name: [] for name in chosen}
    for item in params:
        method, sep, rest = item.partition(":")
        if not sep or method not in per_method:
            raise UserError(f"--param {item!r} must read METHOD:KEY=VALUE with a METHOD from --methods, "
                            f"e.g. --param {chosen[0]}:KEY=VALUE.")
        per_method[method].append(rest)
    return [get_method(name, **parse_parameters(name, per_method[name])) for name in chosen]


def measure_settings(args: argparse.Namespace):
    """The trust measures and their settings from the options of :func:`add_measure_options`."""
    from ..core.trust import CHECKS, MODES, TrustSettings, available_metrics

    checks = parse_list(args.checks, CHECKS, "--checks")
    if "data" in checks and (args.data_steps < 1 or args.data_cases < 2):
        raise UserError("--data-steps must be at least 1 and --data-cases at least 2.")
    if args.max_steps < 1:
        raise UserError(f"--max-steps must be at least 1, got {args.max_steps}.")
    return TrustSettings(
        checks=tuple(checks), modes=tuple(parse_list(args.modes, MODES, "--modes")), max_steps=args.max_steps,
        metrics=tuple(parse_list(args.metrics, available_metrics(), "--metrics")), baseline=args.baseline, subset=args.subset,
        n_subsets=args.subsets, deletion_steps=args.deletion_steps, noise_samples=args.noise_samples,
        noise_radius=args.noise_radius, data_steps=args.data_steps, data_cases=args.data_cases, seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Build the case's problem, run the chosen measures, write tables, plots and a JSON record."""
    from ..core.case import load_case
    from ..core.segment import channel_indices
    from ..core.trust import assess_case, metric_columns, write_trust
    from ..core.trust.tables import format_table
    from .explain import case_target_arguments, parse_classes, parse_target

    card = load_card(args)
    methods = build_methods(args.methods, args.param)
    settings = measure_settings(args)
    signature = None
    if args.ground_truth:
        from ..core.synth import read_ground_truth

        if not Path(args.case).is_dir():
            raise UserError(f"--ground-truth needs a generated case folder with ground_truth.json, got {args.case}.")
        signature = read_ground_truth(args.case)["modality_signature"]
    parse_target(args.target, args.confident)  # a mistake in --target is reported before the case is read
    case = load_case(args.case)
    channel_indices(case, card)
    target = case_target_arguments(args, case)
    if args.ground_truth and case.label is None:
        raise UserError(f"{args.case} has no segmentation file; --ground-truth needs the true label.")
    out = output_folder(args.out)
    classes = parse_classes(args.classes, card)
    start = time.perf_counter()
    with TerminalProgress(f"measuring {case.name}") as bar:
        trust = assess_case(case, card, methods, settings=settings, classes=classes,
                            device=None if args.device in (None, "auto") else args.device, margin=args.margin,
                            ground_truth=args.ground_truth, signature=signature, progress=bar, **target)
    problem = trust.problem
    record: dict[str, Any] = {
        "case": case.name, "case_files": [str(p) for p in case.source_paths], "model_card": str(card.path),
        "model": card.name, "methods": {m.name: {k: json_value(v) for k, v in m.params.items()} for m in methods},
        "classes": list(problem.class_names), "crop_shape": list(problem.spatial_shape),
        "target": problem.target.describe(), "seed": args.seed,
    }
    record["files"] = write_trust(trust, out, case.name)
    if trust.sanity is not None:
        record["layers"] = list(trust.sanity.layers)
        record["sanity_seconds"] = round(trust.sanity.seconds, 2)
        print(f"Model parameter randomisation ({len(trust.sanity.layers)} layers; similarity once all are randomised):")
        print(format_table(trust.sanity.verdicts()))
    if trust.quality is not None:
        record["metric_settings"] = trust.quality.settings
        print("Quality metrics:")
        print(format_table(trust.quality.rows, ["method", "class_name",
                                                *(c.name for c in metric_columns(case_table=True))]))
    if trust.data is not None:
        data = trust.data
        record["data_randomisation"] = {"final_loss": data.final_loss, **data.settings, "seconds": round(data.seconds, 2)}
        print("Data randomisation (similarity of maps between the model and its twins):")
        print(format_table(data.rows))
    if trust.truth is not None:
        truth = trust.truth
        print("Explanation precision (top-k voxels inside the true lesion, k = lesion size):")
        print(format_table(truth.precision))
        if truth.modality:
            print("Modality ground truth (share of relevance on the modality that carries the class):")
            print(format_table(truth.modality, ["method", "model", "class_name", "carrier", "carrier_share",
                                                "expected_share", "top_modality", "agrees"]))
    record["seconds"] = round(time.perf_counter() - start, 2)
    write_text(out / "trust.json", json.dumps(record, indent=2) + "\n")
    print(f"Tables, plots and trust.json in {out} ({record['seconds']:.0f} s).")
    return 0


def json_value(value: Any) -> Any:
    """A parameter value as plain JSON."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
