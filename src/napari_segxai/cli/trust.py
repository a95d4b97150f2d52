"""``segxai trust``: can a case's explanations be trusted? Sanity checks, quality metrics and (generated cases) ground truth."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..core.io.files import write_text
from ._common import TerminalProgress, UserError, add_case_options, load_card, open_case, output_folder, say_cost
from ._explain_options import add_target_options
from ._trust_options import add_measure_options, build_methods, json_value, measure_settings

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

Before the measures start it prints their estimated cost (passes through the network and seconds
on this device, from one timed pass of the crop; data randomisation's training not counted),
kept in trust.json as cost_estimate.

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


def run(args: argparse.Namespace) -> int:
    """Build the case's problem, run the chosen measures, write tables, plots and a JSON record."""
    from ..core.model.preprocess import channel_indices
    from ..core.trust import assess_case, metric_columns, write_trust
    from ..core.trust.tables import format_table
    from ._explain_options import case_target_arguments, parse_classes, parse_target

    card = load_card(args)
    methods = build_methods(args.methods, args.param)
    settings = measure_settings(args)
    signature = None
    if args.ground_truth:
        from ..core.io.generated_cases import read_ground_truth

        if not Path(args.case).is_dir():
            raise UserError(f"--ground-truth needs a generated case folder with ground_truth.json, got {args.case}.")
        signature = read_ground_truth(args.case)["modality_signature"]
    parse_target(args.target, args.confident)  # a mistake in --target is reported before the case is read
    case = open_case(args, card)
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
                            ground_truth=args.ground_truth, signature=signature, progress=bar, before=say_cost,
                            **target)
    problem = trust.problem
    if problem.target.skipped:
        from ..core.attribution.targets import skipped_line

        print(f"{case.name}: {skipped_line(problem.target.skipped)}.")
    record: dict[str, Any] = {
        "case": case.name, "case_files": case.shown_sources(), "model_card": str(card.path),
        "model": card.name, "methods": {m.name: {k: json_value(v) for k, v in m.params.items()} for m in methods},
        "classes": list(problem.class_names), "crop_shape": list(problem.spatial_shape),
        "target": problem.target.describe(), "skipped_not_predicted": list(problem.target.skipped), "seed": args.seed,
        "cost_estimate": trust.cost.record() if trust.cost is not None else None,
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
    from ..core.trust.verdict import store_verdicts

    for verdict in store_verdicts(trust, card, case.name):  # shown beside this model's maps from now on
        print(f"{verdict.method}: {verdict.badge()} (kept for the viewer, reports and segxai explain)")
    record["seconds"] = round(time.perf_counter() - start, 2)
    write_text(out / "trust.json", json.dumps(record, indent=2) + "\n")
    print(f"Tables, plots and trust.json in {out} ({record['seconds']:.0f} s).")
    return 0


