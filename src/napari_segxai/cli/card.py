"""``segxai card``: the model card napari-segxai reads from a model (an nnU-Net folder), written out for review."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import UserError, add_model_options, load_card


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "card", help="write the model card derived from a model folder (nnU-Net v2), for review and edits",
        description="Derive the model card of MODEL (an nnU-Net v2 trained-model folder, or a card) and print it, "
                    "or write it with --out. Edit its name, description, modalities, class names and colours, "
                    "inference overlap and the source's folds, checkpoint and mirroring, then pass the card as "
                    "--model to any command. The fields the folder defines (plans, labels, spacing) are listed "
                    "for review and cannot be changed in the card.",
    )
    add_model_options(parser, model_required=True)
    parser.add_argument("--out", type=Path, default=None, metavar="CARD.yaml",
                        help="write the card here (a new file; never overwrites); default: print it")
    return parser


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..core.io.files import atomic_path
    from ..core.model.sourced import card_mapping

    card = load_card(args)
    text = (f"# Model card of {card.path}, derived by segxai card.\n"
            "# Editable: name, description, modalities, classes' names and colours, inference overlap and\n"
            "# sw_batch_size, trusted, training, training_data, source folds/checkpoint/mirroring.\n"
            + yaml.safe_dump(card_mapping(card), sort_keys=False, allow_unicode=True))
    if args.out is None:
        print(text, end="")
        return 0
    out = Path(args.out).expanduser()
    if out.suffix not in (".yaml", ".yml"):
        raise UserError(f"--out {out} must name a .yaml file.")
    if out.exists():
        raise UserError(f"--out {out} exists; napari-segxai never overwrites a file: choose a new name.")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist.")
    with atomic_path(out) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    print(f"Wrote {out} ({len(card.classes)} classes, {len(card.modalities)} modalities).")
    return 0
