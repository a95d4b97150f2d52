"""``segxai evaluate``: Dice of a model on held-out generated cases and, optionally, on real labelled cases."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from ..core.files import atomic_path, write_text
from ._common import TerminalProgress, UserError, add_model_options, load_card, output_folder


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segxai evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="Dice per region on held-out generated cases (and real cases with a reference)",
        description="Segment held-out generated cases (seeds never used in training) and report Dice for "
        "whole tumour (labels 1, 2, 4), tumour core (1, 4) and enhancing tumour (4), mean and SD, raw and "
        "after keeping the largest connected component. --real adds case folders scored against a reference label.",
    )
    add_model_options(parser)
    parser.add_argument("--count", type=int, default=20, help="number of held-out generated cases (default 20; 0 for none)")
    parser.add_argument("--seed-start", type=int, default=None, help="first held-out seed (default 900000)")
    parser.add_argument("--size", choices=["full", "toy"], default="full", help="generated case size (default full)")
    parser.add_argument("--real", type=Path, nargs="*", default=[], metavar="DIR", help="real case folders, each holding a reference label")
    parser.add_argument(
        "--reference", default="fusion_mav", metavar="STEM",
        help="file name stem of the reference label inside each --real folder (default fusion_mav); the case's own _seg otherwise",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for results.json and results.csv")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"], help="where to run the model; default: CUDA, then MPS, then CPU")
    return parser


def _reference(folder: Path, stem: str):
    """The reference label volume of a real case folder: ``<stem>.nii[.gz]``, else the case's own label."""
    from ..core.case import load_case, load_label

    for suffix in (".nii.gz", ".nii"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return load_label(path)[0]
    case = load_case(folder)
    if case.label is None:
        raise UserError(f"{folder} has no {stem}.nii.gz and no label file; give a folder with a reference segmentation.")
    return case.label


def run(args: argparse.Namespace) -> int:
    """Evaluate, print a table, write results.json and results.csv."""
    from ..core.case import load_case
    from ..core.model_card import build_network
    from ..core.segment import pick_device
    from ..core.train import HELD_OUT_SEED_START, evaluate_case, evaluate_generated, summarize

    if args.count < 0:
        raise UserError(f"--count must be 0 or more, got {args.count}.")
    if args.count == 0 and not args.real:
        raise UserError("Nothing to evaluate: give --count above 0 or --real folders.")
    for folder in args.real:
        if not folder.is_dir():
            raise UserError(f"--real {folder} is not a folder; give case folders.")
    card = load_card(args)
    device = str(pick_device(None if args.device in (None, "auto") else args.device))
    network = build_network(card, device)
    out = output_folder(args.out)
    start = HELD_OUT_SEED_START if args.seed_start is None else args.seed_start
    seeds = list(range(start, start + args.count))
    results: dict = {"model": str(card.path), "device": device}
    if seeds:
        with TerminalProgress("evaluate") as bar:
            rows = evaluate_generated(card, seeds, network=network, device=device, size=args.size, progress=bar)
        results["generated"] = {"seeds": [seeds[0], seeds[-1]], "rows": rows, "summary": summarize(rows)}
    real_rows = []
    for folder in args.real:
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


def _print(results: dict) -> None:
    """A readable summary table."""
    if "generated" in results:
        s = results["generated"]["summary"]
        print(f"held-out generated cases (n={s['whole_tumour']['n']}, seeds {results['generated']['seeds'][0]}..{results['generated']['seeds'][1]}):")
        for region in ("whole_tumour", "tumour_core", "enhancing"):
            raw, lcc = s[region], s[f"{region}_lcc"]
            print(f"  {region:13s} Dice {raw['mean']:.3f} ± {raw['sd']:.3f}   largest component {lcc['mean']:.3f} ± {lcc['sd']:.3f}")
    for row in results.get("real", {}).get("rows", []):
        print(f"  real {row['case']}: whole tumour {row['whole_tumour']:.3f} (largest component {row['whole_tumour_lcc']:.3f}), "
              f"core {row['tumour_core']:.3f}, enhancing {row['enhancing']:.3f} vs {row['reference']}")
