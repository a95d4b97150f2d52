"""``segxai train``: train a segmentation network on generated cases or a dataset of files, with checkpoints for TracIn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import TerminalProgress, UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segxai train``."""
    parser = subparsers.add_parser(
        "train", help="train a network on generated cases or your dataset (writes card, weights, checkpoints, manifest)",
        description="Train the network a YAML config describes, on generated tumour cases or, with --data, on "
        "a labelled dataset of NIfTI files (an nnU-Net v2 raw dataset, a Medical Segmentation Decathlon "
        "dataset or a folder of case folders; the model's modalities and classes are then the dataset's). "
        "Writes a model card, final weights, intermediate checkpoints and a training manifest (learning "
        "rates, the training cases: seeds, or file paths and SHA-256 digests) into --out, so segxai influence "
        "works on the model. Ctrl-C stops early and keeps what was trained so far.",
    )
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (YAML); default: the bundled 3D demo model's recipe, configs/demo3d.yaml")
    parser.add_argument("--data", type=Path, default=None, metavar="DATASET",
                        help="train on this labelled dataset of files instead of generated cases")
    parser.add_argument("--generated", type=int, default=None, metavar="N",
                        help="with --data: also train on N generated cases (their labels matched to the dataset's by name)")
    parser.add_argument("--checkpoints", type=int, default=None, metavar="K",
                        help="override checkpoints of the config (how many are recorded for TracIn, the final weights included)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new (or empty) output folder")
    parser.add_argument("--steps", type=int, default=None, help="override schedule.steps of the config")
    parser.add_argument("--minutes", type=float, default=None, help="override time_budget_minutes of the config")
    parser.add_argument("--quiet", action="store_true", help="no log lines, only the progress bar")
    return parser


def demo_recipe() -> Path:
    """The 3D demo model's recipe: ``configs/demo3d.yaml`` of the source tree, else the config the shipped model ran."""
    from ..core.io.paths import demo_model_card_path, sample_data_dir

    recipe = sample_data_dir().parent / "configs" / "demo3d.yaml"
    return recipe if recipe.is_file() else demo_model_card_path("demo3d").parent / "training" / "config.yaml"


def run(args: argparse.Namespace) -> int:
    """Train and print where the card went."""
    from ..core.training.config import load_config, make_config
    from ..core.training.loop import train

    config_path = args.config if args.config is not None else demo_recipe()
    config = load_config(config_path)
    if args.data is not None:
        config["data"]["dataset"] = str(args.data)
        if args.config is None:  # the demo recipe, but not the demo's name
            name = args.data.expanduser().resolve().name
            config["name"] = f"{config['architecture'].lower()}-{name}"
            config["description"] = f"{config['architecture']} trained on {name} with the 3D demo recipe."
    if args.generated is not None:
        if args.data is None:
            raise UserError("--generated adds generated cases to a dataset; give the dataset with --data.")
        if args.generated < 0:
            raise UserError(f"--generated must be 0 or more, got {args.generated}.")
        config["data"]["generated"] = args.generated
    if args.checkpoints is not None:
        if args.checkpoints < 1:
            raise UserError(f"--checkpoints must be at least 1, got {args.checkpoints}.")
        config["checkpoints"] = args.checkpoints
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be at least 1, got {args.steps}.")
        config["schedule"]["steps"] = args.steps
    if args.minutes is not None:
        if args.minutes <= 0:
            raise UserError(f"--minutes must be positive, got {args.minutes}.")
        config["time_budget_minutes"] = args.minutes
    config = make_config(config, source=str(config_path))
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    with TerminalProgress("train") as bar:
        result = train(config, args.out, progress=bar, log=log)
    print(f"{result.card} ({result.steps} steps, {result.seconds / 60:.1f} min, {result.stopped}, loss {result.final_loss:.4f})")
    return 0
