"""``segxai influence-check``: the faithfulness check of TracIn (last-hidden-layer similarity against TracIn rank)."""

from __future__ import annotations

import argparse
import csv
import io

from ..core.io.files import write_text
from ._common import UserError, add_case_options, output_folder
from ._tracin_options import add_tracin_options, file_stem, query

DESCRIPTION = """\
Checks whether TracIn's proponents look like the case to the network: every class region (of the
case and of each training case) is summarised by the mean of the network's last hidden layer over
its voxels; for each class of the case, prints the Spearman correlation between TracIn score and
cosine similarity over all training regions, and the mean similarity of the top proponents and of
the top opponents (proponents should be more similar). Writes <case>_similarity.csv and a plot,
<case>_similarity.png (similarity against TracIn rank)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``influence-check`` and its options."""
    parser = subparsers.add_parser(
        "influence-check",
        help="TracIn faithfulness: do proponents resemble the case in the network's last hidden layer?",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_case_options(parser)
    add_tracin_options(parser)
    parser.add_argument("--top", type=int, default=10, metavar="K",
                        help="how many proponents and opponents are averaged (default 10)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Query, print the similarity table, write it as CSV with a plot."""
    from ..core.influence.features import similarity_check, similarity_plot, similarity_table

    if args.top < 1:
        raise UserError(f"--top must be 1 or more, got {args.top}.")
    out = output_folder(args.out)
    case, card, result = query(args)
    rows = similarity_check(result, top=args.top)
    if not rows:
        raise UserError(f"None of the chosen classes is predicted in {case.name} at probability >= {result.threshold:g}; "
                        "lower --threshold or choose another case.")
    print(result.describe())
    print(similarity_table(rows))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["test_class", "regions", "spearman", "proponents", "opponents", "all", "top"])
    for r in rows:
        writer.writerow([r.test_class, r.regions, f"{r.spearman:.4f}", f"{r.proponents:.4f}", f"{r.opponents:.4f}",
                         f"{r.everyone:.4f}", r.top])
    table = write_text(out / f"{file_stem(case.name)}_similarity.csv", buffer.getvalue())
    plot = similarity_plot(result, rows, out / f"{file_stem(case.name)}_similarity.png")
    print(f"Table: {table}")
    print(f"Plot: {plot}")
    return 0
