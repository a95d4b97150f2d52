"""``segxai evaluate``: Dice of a model on held-out generated and labelled cases, or (``--methods``) explanation quality over cases."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ..core.io.files import atomic_path, write_text
from ._common import TerminalProgress, UserError, add_model_options, load_card, output_folder

DESCRIPTION = """\
Without --methods: segment held-out generated cases (seeds never used in training) and report Dice
for whole tumour (labels 1, 2, 4), tumour core (1, 4) and enhancing tumour (4), mean and SD, raw
and after keeping the largest connected component. --real (and --cases) add case folders scored
against a reference label. Writes results.json and results.csv.

With --methods M1,M2: measure the explanation quality of those attribution methods on every case
of --cases, with the measures of `segxai trust` (model parameter randomisation, faithfulness,
deletion, max-sensitivity, complexity, seconds; data randomisation with --checks ...,data; and on
generated case folders with ground_truth.json also precision against the true lesion, next to
Sobel/Laplace edge filters, and the share of relevance on the modality that carries each class).
Prints a table of every measure per method, mean ± SD over cases and classes (n values), and
writes into --out: quality.csv (one row per case, method and class), quality_summary.csv (per
method and measure: mean, sd, n), quality.png (a bar per method, SD error bars) and quality.json.
A case that cannot be loaded or measured is reported and skipped; the command fails only when no
case could be measured. See docs/trust.md."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segxai evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="Dice per region on held-out generated cases (and real cases with a reference); "
                         "with --methods, explanation quality of attribution methods over cases",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.add_argument("--count", type=int, default=None,
                        help="number of held-out generated cases for Dice (default 20, or 0 when --cases is given; 0 for none)")
    parser.add_argument("--seed-start", type=int, default=None, help="first held-out seed (default 900000)")
    parser.add_argument("--size", choices=["full", "toy"], default=None, help="generated case size (default full)")
    parser.add_argument("--real", type=Path, nargs="*", default=[], metavar="DIR", help="real case folders, each holding a reference label")
    parser.add_argument(
        "--reference", default="fusion_mav", metavar="STEM",
        help="file name stem of the reference label inside each --real folder (default fusion_mav); the case's own _seg otherwise",
    )
    parser.add_argument(
        "--cases", type=Path, nargs="+", default=[], metavar="PATH",
        help="cases: case folders or NIfTI files, or folders of them (one sub-folder or file per case); with "
             "--methods their explanation quality, else their Dice against a reference label as with --real",
    )
    parser.add_argument(
        "--methods", default=None, metavar="M1,M2",
        help="comma-separated attribution methods (see `segxai explain --help`): measure their explanation "
             "quality on --cases instead of Dice",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder for results.json and results.csv (with --methods: quality.csv, "
                             "quality_summary.csv, quality.png, quality.json)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="where to run the model; default: CUDA, then MPS, then CPU")
    from ._trust_options import add_measure_options

    add_measure_options(parser.add_argument_group("explanation quality (with --methods; as in segxai trust)"))
    return parser


def case_paths(paths: Sequence[Path]) -> list[Path]:
    """Every case of --cases: a NIfTI file or a folder holding NIfTI files is a case; any other folder holds cases."""
    from ..core import naming
    from ..core.cohort.cases import find_cases

    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            raise UserError(f"--cases {path} does not exist; give case folders, NIfTI files or a folder of cases.")
        if path.is_file() or any(p.is_file() and naming.is_nifti(p) and not p.name.startswith(".") for p in path.iterdir()):
            found.append(path)
        else:
            found += [case.path for case in find_cases(path)]
    return found


def _reference(folder: Path, stem: str):
    """The reference label volume of a real case folder: ``<stem>.nii[.gz]``, else the case's own label."""
    from ..core.io.nifti import load_case, load_label

    for suffix in (".nii.gz", ".nii"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return load_label(path)[0]
    case = load_case(folder)
    if case.label is None:
        raise UserError(f"{folder} has no {stem}.nii.gz and no label file; give a folder with a reference segmentation.")
    return case.label


def run(args: argparse.Namespace) -> int:
    """Dice (default) or, with --methods, explanation quality over --cases."""
    if args.methods is not None:
        return run_quality(args)
    return run_dice(args)


def run_dice(args: argparse.Namespace) -> int:
    """Evaluate Dice, print a table, write results.json and results.csv."""
    from ..core.io.nifti import load_case
    from ..core.model.card import build_network
    from ..core.model.device import pick_device
    from ..core.training.evaluate import HELD_OUT_SEED_START, evaluate_case, evaluate_generated, summarize

    count = (0 if args.cases else 20) if args.count is None else args.count
    if count < 0:
        raise UserError(f"--count must be 0 or more, got {count}.")
    for folder in args.real:
        if not folder.is_dir():
            raise UserError(f"--real {folder} is not a folder; give case folders.")
    labelled = list(args.real)
    for path in case_paths(args.cases):
        if not path.is_dir():
            raise UserError(f"--cases {path} is a single file; Dice needs a case folder holding a reference label.")
        labelled.append(path)
    if count == 0 and not labelled:
        raise UserError("Nothing to evaluate: give --count above 0, --real folders or --cases.")
    card = load_card(args)
    device = str(pick_device(None if args.device in (None, "auto") else args.device))
    network = build_network(card, device)
    out = output_folder(args.out)
    start = HELD_OUT_SEED_START if args.seed_start is None else args.seed_start
    seeds = list(range(start, start + count))
    results: dict = {"model": str(card.path), "device": device}
    if seeds:
        with TerminalProgress("evaluate") as bar:
            rows = evaluate_generated(card, seeds, network=network, device=device, size=args.size or "full", progress=bar)
        results["generated"] = {"seeds": [seeds[0], seeds[-1]], "rows": rows, "summary": summarize(rows)}
    real_rows = []
    for folder in labelled:
        case = load_case(folder)
        row = evaluate_case(case, _reference(folder, args.reference), card, network=network, device=device)
        row["reference"] = args.reference
        real_rows.append(row)
    if real_rows:
        results["real"] = {"rows": real_rows, "summary": summarize(real_rows)}
    write_text(out / "results.json", json.dumps(results, indent=1))
    all_rows = [dict(r, set="generated") for r in results.get("generated", {}).get("rows", [])] + [dict(r, set="real") for r in real_rows]
    fields = sorted({k for r in all_rows for k in r}, key=lambda k: (k not in ("set", "case", "seed"), k))
    with atomic_path(out / "results.csv") as temporary, open(temporary, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(all_rows)
    _print(results)
    print(f"results: {out / 'results.json'}, {out / 'results.csv'}")
    return 0


def run_quality(args: argparse.Namespace) -> int:
    """Measure every method on every case, print the per-method table, write the rows, the summary, a plot and a record."""
    from ..core.attribution.explain_case import class_indices
    from ..core.io.nifti import load_case
    from ..core.model.card import build_network
    from ..core.model.preprocess import channel_indices
    from ..core.model.device import pick_device
    from ..core.io.generated_cases import read_ground_truth
    from ..core.trust import assess_case, quality_rows, quality_summary
    from ..core.trust.plots import summary_plot
    from ..core.trust.tables import summary_table, write_csv
    from ._explain_options import parse_classes
    from ._trust_options import build_methods, json_value, measure_settings

    dice_only = [flag for flag, given in (("--count", args.count is not None), ("--seed-start", args.seed_start is not None),
                                          ("--size", args.size is not None), ("--real", bool(args.real))) if given]
    if dice_only:
        raise UserError(f"{dice_only[0]} chooses generated cases for Dice; with --methods give the cases to measure with --cases.")
    if not args.cases:
        raise UserError("--methods measures the cases of --cases; give case folders, NIfTI files or a folder of cases.")
    card = load_card(args)
    methods = build_methods(args.methods, args.param)
    settings = measure_settings(args)
    classes = parse_classes(args.classes, card)
    class_indices(card, classes)   # an unknown class stops here, not once per case
    paths = case_paths(args.cases)
    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    out = output_folder(args.out)
    start = time.perf_counter()
    rows, measured, failures, names = [], [], {}, set()
    with TerminalProgress(f"measuring {len(paths)} case{'s' if len(paths) != 1 else ''}") as bar:
        for i, path in enumerate(paths):
            def part(done: int, total: int, i: int = i) -> None:
                bar(i * 1000 + int(1000 * done / max(total, 1)), 1000 * len(paths))

            try:   # a case that fails is reported and skipped; the others are still measured
                case = load_case(path)
                channel_indices(case, card)
                truth = path.is_dir() and (path / "ground_truth.json").is_file() and case.label is not None
                signature = read_ground_truth(path).get("modality_signature") if truth else None
                trust = assess_case(case, card, methods, settings=settings, classes=classes, network=network,
                                    device=device, margin=args.margin, ground_truth=truth, signature=signature,
                                    progress=part)
            except (ValueError, OSError) as err:
                failures[str(path)] = str(err)
                continue
            name = _unique(case.name, names)
            rows += quality_rows(trust, name)
            measured.append({"case": name, "path": str(path), "ground_truth": bool(truth),
                             "crop_shape": list(trust.problem.spatial_shape), "seconds": round(trust.seconds, 2)})
    for path, error in failures.items():
        print(f"segxai evaluate: skipped {path}: {error}", file=sys.stderr)
    if not rows:
        raise UserError(f"No case could be measured ({len(failures)} failed); see the reasons above.")
    summary = quality_summary(rows)
    files = {"rows": write_csv(rows, out / "quality.csv"), "summary": write_csv(summary, out / "quality_summary.csv"),
             "plot": summary_plot(summary, out / "quality.png",
                                  title=f"{card.name}: mean ± SD over {len(measured)} cases and their classes")}
    record = {
        "model_card": str(card.path), "model": card.name, "device": str(device),
        "methods": {m.name: {k: json_value(v) for k, v in m.params.items()} for m in methods},
        "settings": dataclasses.asdict(settings),
        "classes": sorted({r.class_name for r in rows}), "cases": measured, "failed": failures,
        "files": {k: str(v) for k, v in files.items()}, "seconds": round(time.perf_counter() - start, 2),
    }
    files["record"] = write_text(out / "quality.json", json.dumps(record, indent=2) + "\n")
    print(f"Explanation quality of {card.name} over {len(measured)} case{'s' if len(measured) != 1 else ''} "
          f"(mean ± SD over cases and classes; (n) values; - not measured):")
    print(summary_table(summary))
    print(f"quality: {', '.join(str(p) for p in files.values())} ({record['seconds']:.0f} s)")
    return 0


def _unique(name: str, taken: set) -> str:
    """A case name not used yet in this run (``name-2``, ``name-3``... for repeats); recorded as taken."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _print(results: dict) -> None:
    """A readable summary table."""
    from ..core.training.evaluate import FALSE_POSITIVE, FALSE_POSITIVE_CEREBELLUM

    if "generated" in results:
        s = results["generated"]["summary"]
        print(f"held-out generated cases (n={s['whole_tumour']['n']}, seeds {results['generated']['seeds'][0]}..{results['generated']['seeds'][1]}):")
        for region in ("whole_tumour", "tumour_core", "enhancing"):
            raw, lcc = s[region], s[f"{region}_lcc"]
            print(f"  {region:13s} Dice {raw['mean']:.3f} ± {raw['sd']:.3f}   largest component {lcc['mean']:.3f} ± {lcc['sd']:.3f}")
        print(f"  predicted tumour in components apart from the true tumour: {s[FALSE_POSITIVE]['mean']:.1%} on average "
              f"({s[FALSE_POSITIVE_CEREBELLUM]['mean']:.1%} in the cerebellum)")
    for row in results.get("real", {}).get("rows", []):
        print(f"  real {row['case']}: whole tumour {row['whole_tumour']:.3f} (largest component {row['whole_tumour_lcc']:.3f}), "
              f"core {row['tumour_core']:.3f}, enhancing {row['enhancing']:.3f} vs {row['reference']}; "
              f"{row[FALSE_POSITIVE]:.1%} of the predicted tumour apart from the reference's")
