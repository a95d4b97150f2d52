"""``segxai report``: a one-page case report (HTML and PNG) for a clinical meeting."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._explain_options import add_uncertainty_option
from ._common import TerminalProgress, UserError, add_case_options, load_card, open_case, output_folder

DESCRIPTION = """\
Write a one-page report of a case for a review session: the case and the model, orthogonal slices
through the tumour with the segmentation outlined (and Dice when the case has a reference), the
relevance of every predicted class per input sequence for --method, the RoI importance bars (where
the relevance lies, which sequence carries it), the top TracIn proponents and opponents with
thumbnails (models trained with `segxai train`), the trust numbers of the method when --trust names
a `segxai trust` output folder, and the exact settings used.

Writes into --out:
  report.html     self-contained: images embedded, no script, no network font; opens offline
  report.png      the same page as one picture
  roi.csv         the RoI importance table
  influence.csv   every TracIn score (when the model has a training record)"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``report`` and its options."""
    from ..core.report import DEFAULT_METHOD, DEFAULT_TOP

    parser = subparsers.add_parser(
        "report", help="one-page case report (HTML + PNG): segmentation, relevance, RoI bars, TracIn, trust",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_case_options(parser)
    parser.add_argument("--method", default=DEFAULT_METHOD, metavar="M",
                        help=f"relevance method (see `segxai explain --help`); default: {DEFAULT_METHOD}")
    parser.add_argument("--classes", default=None, metavar="NAMES",
                        help="comma-separated class names to explain; default: every predicted class but background")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="K",
                        help=f"proponents and opponents shown per class (default {DEFAULT_TOP})")
    parser.add_argument("--no-influence", action="store_true",
                        help="leave out the TracIn training evidence (the slowest part on a CPU)")
    parser.add_argument("--show-identifiers", action="store_true",
                        help="DICOM studies: show the patient's name, ID, birth date, accession number and the study "
                             "folder in the report (left out by default: the report names the case by a pseudonym)")
    add_uncertainty_option(parser, "add where the model is unsure (entropy over the slices) from an ensemble made this way")
    parser.add_argument("--trust", type=Path, default=None, metavar="DIR",
                        help="the --out folder of a `segxai trust` run on this case, whose numbers the report shows")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the report's parts and write the page; say where it is."""
    from ..core.report import build_report, write_report
    from ._explain_options import parse_classes

    if args.top < 1:
        raise UserError(f"--top must be 1 or more, got {args.top}.")
    card = load_card(args)
    case = open_case(args, card)
    protected = {Path(p).resolve() for p in case.source_paths}
    out = Path(args.out).expanduser()
    if out.resolve() in protected:
        raise UserError(f"--out {out} is one of the case's files; choose a folder for the report.")
    out = output_folder(out)
    classes = None if args.classes in (None, "", "all") else parse_classes(args.classes, card)
    device = None if args.device in (None, "auto") else args.device
    with TerminalProgress(f"report on {case.name}") as bar:
        report = build_report(case, card, method=args.method, classes=classes, top=args.top,
                              influence=not args.no_influence, trust_dir=args.trust, device=device, progress=bar,
                              show_identifiers=args.show_identifiers, uncertainty=args.uncertainty,
                              uncertainty_samples=args.dropout_samples)
    written = write_report(report, out, top=args.top)
    from ..core.report.page import finding_lines

    for line in finding_lines(report):
        print(f"{case.name}: {line}")
    print(f"Report on {case.name} with {card.name} ({args.method}) in {report.seconds['total']:.1f} s.")
    for key, path in written.items():
        print(f"  {key}: {path}")
    return 0
