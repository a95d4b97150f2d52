"""``segxai influence``: TracIn proponents and opponents of a case's predicted classes, as a table and contact sheets."""

from __future__ import annotations

import argparse
import re

from ._common import TerminalProgress, UserError, add_case_options, load_card, output_folder

DESCRIPTION = """\
Which training cases taught the model to draw this case's classes? Segments the case, splits it
into the predicted class regions (voxels below --threshold dropped) and scores every class region
of every training case by TracIn: the sum over the recorded checkpoints of learning rate x
(gradient of the test region's loss . gradient of the training region's loss), see
docs/influence.md. Needs a model trained with `segxai train` (checkpoints and learning rates).

Writes into --out:
  <case>_influence.csv            every (test class, training case, training class) score and rank,
                                  with the training region's centre and bounding box
  <case>_influence_<class>.png    per test class: the top proponents and opponents, each a slice of
                                  the training case through its region, outlined, with its score
The indexed engine (default) keeps the training gradients in an index file beside the checkpoints
(or in the user cache folder), built on first use and rebuilt when the checkpoints change."""


def add_tracin_options(parser: argparse.ArgumentParser) -> None:
    """The TracIn settings shared by ``influence`` and ``influence-check``."""
    from ..core.influence.gradients import DEFAULT_LAST_K, LAYER_CHOICES
    from ..core.influence.query import ENGINES

    parser.add_argument("--class", dest="classes", action="append", default=None, metavar="C",
                        help="a class of the case to explain (repeat for several); default: every class but background")
    parser.add_argument("--train-class", dest="train_classes", action="append", default=None, metavar="C",
                        help="a class of the training cases to score (repeat for several); default: every class but background")
    parser.add_argument("--engine", choices=ENGINES, default="indexed",
                        help="indexed: stored training gradients, fast queries (default); exact: recompute them all")
    parser.add_argument("--layers", choices=LAYER_CHOICES, default="last",
                        help="whose parameters' gradients count: all, the last K layers (default) or the final layer")
    parser.add_argument("--last-k", type=int, default=DEFAULT_LAST_K, metavar="K",
                        help=f"how many layers --layers last takes (default {DEFAULT_LAST_K})")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="drop voxels whose predicted class probability is below this (default 0.5)")
    parser.add_argument("--projection", type=int, default=None, metavar="N",
                        help="random projection size of stored gradients (indexed engine; 0: none; default: none for "
                             "short gradients, 2048 for long ones)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="build the index on the dask scheduler at ADDRESS (default: in this process)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="build the index on a local dask cluster of N worker processes")
    parser.add_argument("--rebuild-index", action="store_true", help="rebuild the index even when it is current")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``influence`` and its options."""
    parser = subparsers.add_parser(
        "influence",
        help="TracIn training evidence: which training cases' class regions were proponents or opponents",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_case_options(parser)
    add_tracin_options(parser)
    parser.add_argument("--top", type=int, default=8, metavar="K",
                        help="proponents and opponents shown per class (default 8)")
    return parser


def query(args: argparse.Namespace):
    """Load the case and the card and run the TracIn query the options ask for; returns (case, card, result)."""
    from ..core.case import load_case
    from ..core.influence import influence, training_record

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be 1 or more, got {args.workers}.")
    card = load_card(args)
    training_record(card)  # a model without checkpoints is reported before any work
    case = load_case(args.case)
    device = None if args.device in (None, "auto") else args.device
    with TerminalProgress(f"TracIn of {case.name}") as bar:
        result = influence(
            case, card, classes=args.classes, train_classes=args.train_classes, engine=args.engine,
            layers=args.layers, last_k=args.last_k, threshold=args.threshold, projection=args.projection,
            device=device or "cpu", scheduler=args.scheduler, workers=args.workers, rebuild=args.rebuild_index,
            progress=bar,
        )
    return case, card, result


def file_stem(name: str) -> str:
    """A class or case name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def run(args: argparse.Namespace) -> int:
    """Query, write the CSV and one contact sheet per class, print the strongest evidence."""
    from ..core.influence import training_case
    from ..core.thumbnails import case_tile, contact_sheet, format_score

    if args.top < 1:
        raise UserError(f"--top must be 1 or more, got {args.top}.")
    out = output_folder(args.out)
    case, card, result = query(args)
    csv_path = result.to_csv(out / f"{file_stem(case.name)}_influence.csv")
    print(result.describe())
    if result.details.get("index_path"):
        print(f"Index ({result.details.get('index_status')}): {result.details['index_path']}")
    print(f"Table: {csv_path}")
    cases: dict[int, object] = {}

    def tile(evidence):
        if evidence.seed not in cases:
            cases[evidence.seed] = training_case(card, evidence.seed)
        return case_tile(evidence, cases[evidence.seed], colors=card.classes)

    for a, name in enumerate(result.test_classes):
        if result.test_voxels[a] == 0:
            print(f"{name}: not predicted in {case.name} at probability >= {result.threshold:g}; nothing to explain.")
            continue
        pros, cons = result.proponents(name, top=args.top), result.opponents(name, top=args.top)
        for label, items in (("proponents", pros), ("opponents", cons)):
            listed = ", ".join(f"{e.training_case} {e.train_class} {format_score(e.score)}" for e in items[:5]) or "none"
            print(f"{name} {label}: {listed}")
        title = f"{case.name} - {name}: training evidence (TracIn, {result.layers} layers)"
        sheet = contact_sheet({"Proponents": [tile(e) for e in pros], "Opponents": [tile(e) for e in cons]},
                              out / f"{file_stem(case.name)}_influence_{file_stem(name)}.png", title)
        print(f"Contact sheet: {sheet}")
    return 0
