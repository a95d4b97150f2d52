"""Options of the TracIn commands (``influence``, ``influence_check``): the training record, checkpoints, the query."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from ._common import TerminalProgress, UserError, load_card, open_case
from ._explain_options import DEFAULT_THRESHOLD


def add_tracin_options(parser: argparse.ArgumentParser) -> None:
    """The TracIn settings shared by ``influence`` and ``influence-check``."""
    from ..core.influence.gradients import DEFAULT_LAST_K, DEFAULT_LAYERS, LAYER_CHOICES
    from ..core.influence.index import DEFAULT_PROJECTION
    from ..core.influence.query import ENGINES
    from ..core.influence.scoring import DEFAULT_SCORING, EXACT_DEFAULT_SCORING, SCORINGS

    parser.add_argument("--class", dest="classes", action="append", default=None, metavar="C",
                        help="a class of the case to explain (repeat for several); default: every class but background")
    parser.add_argument("--train-class", dest="train_classes", action="append", default=None, metavar="C",
                        help="a class of the training cases to score (repeat for several); default: every class but background")
    parser.add_argument("--engine", choices=ENGINES, default="indexed",
                        help="indexed: stored training gradients, fast queries (default); exact: recompute them all")
    parser.add_argument("--layers", choices=LAYER_CHOICES, default=DEFAULT_LAYERS,
                        help=f"whose parameters' gradients count: all (default; sketched to {DEFAULT_PROJECTION} numbers when "
                             "long), the last K layers or the final layer")
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
                        help="build the index on a local dask cluster of N worker processes (default: in this process, "
                             "or a local cluster of one worker per core, at most 4, for a training set of 32 or more files)")
    parser.add_argument("--scoring", choices=SCORINGS, default=None,
                        help="raw TracIn, or renormalised: cosine (gradient-aggregated similarity), relative (to the "
                             "training region's gradient size) or specific (relative, after removing what all training "
                             f"regions share; indexed engine); default {DEFAULT_SCORING} ({EXACT_DEFAULT_SCORING} with "
                             "--engine exact), see docs/influence.md")
    parser.add_argument("--rebuild-index", action="store_true", help="rebuild the index even when it is current")
    parser.add_argument("--uncertain", type=float, default=None, nargs="?", const=DEFAULT_THRESHOLD, metavar="NATS",
                        help="why is the model unsure here: score only the part of each class region whose entropy "
                             f"(from test-time flips) exceeds NATS (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--training-data", type=Path, default=None, metavar="DIR",
                        help="where the model's training dataset is now, when it moved since training "
                             "(the files are checked against their recorded SHA-256)")


def query(args: argparse.Namespace):
    """Load the case and the card and run the TracIn query the options ask for; returns (case, card, result)."""
    from ..core.influence import influence, training_record

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be 1 or more, got {args.workers}.")
    card = load_card(args)
    if args.training_data is not None:
        folder = args.training_data.expanduser().resolve()
        if not folder.is_dir():
            raise UserError(f"--training-data {args.training_data} is not a folder; give the dataset's folder.")
        card = dataclasses.replace(card, training_data=folder)
    training_record(card)  # a model without checkpoints is reported before any work
    case = open_case(args, card)
    device = None if args.device in (None, "auto") else args.device
    within = None
    if args.uncertain is not None:
        from ..core.model.uncertainty import uncertain_region, uncertainty

        with TerminalProgress(f"uncertainty of {case.name} (flips)") as bar:
            within = uncertain_region(uncertainty(case, card, "flips", device=device, progress=bar), args.uncertain)
        print(f"Scoring the {int(within.sum())} voxels whose entropy exceeds {args.uncertain:g} nats.")
    with TerminalProgress(f"TracIn of {case.name}") as bar:
        result = influence(
            case, card, classes=args.classes, train_classes=args.train_classes, engine=args.engine,
            layers=args.layers, last_k=args.last_k, threshold=args.threshold, projection=args.projection,
            device=device or "cpu", scheduler=args.scheduler, workers=args.workers, rebuild=args.rebuild_index,
            scoring=args.scoring, within=within,
            progress=bar,
        )
    return case, card, result


def file_stem(name: str) -> str:
    """A class or case name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"
