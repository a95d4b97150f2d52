"""``segxai cohort``: segment and explain every case of a folder on dask workers, then cohort-level RoI importance and anomalies."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ._common import TerminalProgress, UserError, add_model_options, load_card

DESCRIPTION = """\
Segment and explain every case of CASES_DIR (each sub-folder holding NIfTI files, and each NIfTI
file) on dask.distributed workers, measure the RoI importance of each explained class (Agg2Exp:
e_{b->a}, the share of the class's |relevance| in each region b, and the share in each modality),
then analyse the cohort: mean and SD of each e_{b->a}, an Isolation Forest anomaly score per case
and class, Dice against the case's reference label where there is one and its Spearman
correlation with the anomaly score, and (with --metadata) whether any subgroup is
over-represented among the flagged cases.

Resumable: each finished case is written to OUT/cases/<case>/ with a done marker (done.json), so a
re-run computes only what is missing, and an interruption never loses a finished case. A case that
fails is recorded with its one-line error (OUT/failures.csv) and the others go on; the exit status
is then 1.

Writes into --out: cases/<case>/{done.json, roi.csv[, segmentation.nii.gz, relevance_<class>.nii.gz]},
cohort_table.csv, global_importance.csv, global_importance.png, anomalies.csv,
dice_correlation.csv, failures.csv, summary.json, and subgroups.csv with --metadata.
See docs/cohort.md for every column."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cohort`` and its options."""
    parser = subparsers.add_parser(
        "cohort",
        help="segment and explain every case of a folder on dask workers; cohort RoI importance, anomalies, subgroups",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cases_dir", type=Path, metavar="CASES_DIR",
                        help="folder of cases: one sub-folder of per-modality NIfTI files (BraTS style) or one NIfTI file per case")
    add_model_options(parser)
    parser.add_argument("--method", default="saliency", metavar="M",
                        help="attribution method (see segxai explain --help for the list); default: saliency")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the method, e.g. --param steps=16 (repeatable)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing); re-run with the same folder to resume")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of a running dask scheduler (e.g. tcp://10.0.0.5:8786) whose workers see the same "
                             "files; default: a local cluster on this machine")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes of the local cluster, each keeping the model loaded; default: one per CPU "
                             "core, at most 4")
    parser.add_argument("--memory-limit", default="auto", metavar="SIZE",
                        help="memory limit of each local worker, e.g. 4GiB; default: auto (the machine's memory shared out)")
    parser.add_argument("--maps", action="store_true",
                        help="also write each case's segmentation and relevance maps as NIfTI (one 4D file per class, "
                             "channels = modalities)")
    parser.add_argument("--metadata", type=Path, default=None, metavar="CSV",
                        help="CSV of case metadata (a 'case' column, then e.g. sex, age_group, site) for the subgroup test")
    parser.add_argument("--contamination", type=float, default=0.1, metavar="FRACTION",
                        help="expected share of anomalous cases: the Isolation Forest flags about this fraction "
                             "per class (0-0.5; default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Isolation Forest (default 0)")
    parser.add_argument("--top", type=int, default=5, metavar="K",
                        help="how many most and least anomalous cases to list per class (default 5)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
                        help="where the workers run the model; default: CUDA, then MPS, then CPU")
    return parser


def _check(args: argparse.Namespace) -> None:
    """User mistakes in the options, each as one sentence."""
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be 1 or more, got {args.workers}.")
    if args.workers is not None and args.scheduler:
        raise UserError("--workers sizes the local cluster; leave it out with --scheduler (the cluster has its own workers).")
    if not 0.0 < args.contamination <= 0.5:
        raise UserError(f"--contamination must be in (0, 0.5], got {args.contamination}.")
    if args.top < 1:
        raise UserError(f"--top must be 1 or more, got {args.top}.")
    if not args.cases_dir.is_dir():
        raise UserError(f"CASES_DIR {args.cases_dir} is not a folder; give a folder of case folders or NIfTI files.")
    out = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder for the outputs.")
    if out.resolve() == args.cases_dir.resolve():
        raise UserError("--out is CASES_DIR itself; give a separate output folder (it may lie inside CASES_DIR).")


def run(args: argparse.Namespace) -> int:
    """Run the cohort on dask workers, analyse it, print a summary; exit status 1 when a case failed."""
    from ..core.cohort import CohortSettings, analyse_cohort, run_cohort
    from ..core.cohort.subgroups import read_metadata
    from ._explain_options import parse_parameters

    _check(args)
    card = load_card(args)
    if Path(card.path).is_dir() and any(getattr(args, k, None) for k in ("folds", "checkpoint", "no_mirroring")):
        raise UserError("cohort workers open the model folder itself (every fold, the final checkpoint, mirroring); "
                        f"to choose, write a card with `segxai card {args.model} --folds ... --out card.yaml` and give "
                        "that card as --model.")
    params = parse_parameters(args.method, args.param)
    if args.metadata is not None:
        read_metadata(args.metadata)  # a bad CSV is reported before the long run
    if args.device not in (None, "auto") and not args.scheduler:
        from ..core.model.device import pick_device

        pick_device(args.device)  # a device this machine lacks is reported once, not by every case
    settings = CohortSettings(
        model_card=str(Path(card.path).resolve()), method=args.method, parameters=tuple(sorted(params.items())),
        maps=args.maps, device=None if args.device in (None, "auto") else args.device, trusted=args.trust_model,
        mirroring=not getattr(args, "no_mirroring", False),
    )
    with TerminalProgress("cohort (cases)") as bar:
        result = run_cohort(args.cases_dir, args.out, settings, scheduler=args.scheduler, workers=args.workers,
                            memory_limit=args.memory_limit, progress=bar)
    report = analyse_cohort(args.out, result.cases, metadata=args.metadata, contamination=args.contamination,
                            seed=args.seed, top=args.top, settings=settings.fingerprint())
    where = f"scheduler {args.scheduler}" if args.scheduler else f"a local cluster of {result.workers} worker(s)"
    print(f"{len(result.cases)} case(s) in {args.cases_dir}: {len(result.computed)} computed on {where} in "
          f"{result.seconds:.1f} s, {len(result.reused)} finished earlier, {len(report.failures)} failed.")
    for case, error in report.failures.items():
        print(f"  failed {case}: {error}")
    for name, result_class in report.anomalies.items():
        top = ", ".join(f"{c} ({s:.3f})" for c, s in result_class.top(args.top))
        flagged = int(result_class.flagged.sum())
        print(f"class {name}: {len(result_class.cases)} cases, {flagged} flagged; most anomalous: {top}")
    for c in report.correlations:
        if math.isnan(c.rho):
            print(f"class {c.class_name}: anomaly score vs Dice: not computed ({c.note}).")
        else:
            print(f"class {c.class_name}: anomaly score vs Dice: Spearman rho {c.rho:+.3f}, p = {c.p_value:.3g} (n = {c.n}).")
    for note in report.notes:
        print(f"note: {note}")
    if report.subgroups:
        best = report.subgroups[0]
        print(f"subgroups: lowest p for {best.column} = {best.value}: {best.flagged}/{best.cases} flagged vs "
              f"{best.other_flagged}/{best.other_cases} elsewhere, {best.test} p = {best.p_value:.3g} "
              f"(Bonferroni {best.p_adjusted:.3g}).")
    print(f"Results: {Path(args.out) / 'summary.json'} (tables and chart beside it).")
    return 1 if report.failures else 0
