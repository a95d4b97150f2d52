"""``segxai influence``: TracIn proponents and opponents of a case's predicted classes, as a table and contact sheets."""

from __future__ import annotations

import argparse

from ._common import UserError, add_case_options, output_folder
from ._tracin_options import add_tracin_options, file_stem, query

DESCRIPTION = """\
Which training cases taught the model to draw this case's classes? Segments the case, splits it
into the predicted class regions (voxels below --threshold dropped) and scores every class region
of every training case by TracIn: the sum over the recorded checkpoints of learning rate x
(gradient of the test region's loss . gradient of the training region's loss), by default after
removing what all training regions' gradients share and divided by the training region's
gradient size (--scoring specific), see docs/influence.md.
Needs a model trained with `segxai train` or recorded with TrainingRecorder (checkpoints,
learning rates and the training cases: generated, or files found again by their recorded paths).

Writes into --out:
  <case>_influence.csv            every (test class, training case, training class) score and rank,
                                  with the training region's centre and bounding box
  <case>_influence_<class>.png    per test class: the top proponents and opponents, each a slice of
                                  the training case through its region, outlined, with its score
The indexed engine (default) keeps the training gradients in an index file beside the checkpoints
(or in the user cache folder), built on first use and rebuilt when the checkpoints change."""


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


def run(args: argparse.Namespace) -> int:
    """Query, write the CSV and one contact sheet per class, print the strongest evidence."""
    from ..core.influence import TrainingCaseUnavailable, training_case, unavailable_note
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
    missing: dict[int, TrainingCaseUnavailable] = {}

    def tiles(items):
        """The evidence's tiles; one whose training case's files are not here has none (said once, at the end)."""
        drawn = []
        for evidence in items:
            if evidence.seed not in cases and evidence.seed not in missing:
                try:
                    cases[evidence.seed] = training_case(card, evidence.seed)
                except TrainingCaseUnavailable as err:
                    missing[evidence.seed] = err
            if evidence.seed in cases:
                drawn.append(case_tile(evidence, cases[evidence.seed], colors=card.classes))
        return drawn

    for a, name in enumerate(result.test_classes):
        if result.test_voxels[a] == 0:
            print(f"{case.name}: no {name} predicted (at probability >= {result.threshold:g}): skipped.")
            continue
        pros, cons = result.proponents(name, top=args.top), result.opponents(name, top=args.top)
        for label, items in (("proponents", pros), ("opponents", cons)):
            listed = ", ".join(f"{e.training_case} {e.train_class} {format_score(e.score)}" for e in items[:5]) or "none"
            print(f"{name} {label}: {listed}")
        title = f"{case.name} - {name}: training evidence (TracIn, {result.layers} layers)"
        sheet = contact_sheet({"Proponents": tiles(pros), "Opponents": tiles(cons)},
                              out / f"{file_stem(case.name)}_influence_{file_stem(name)}.png", title)
        print(f"Contact sheet: {sheet}")
    if missing:
        print(unavailable_note(list(missing.values())))
    return 0
