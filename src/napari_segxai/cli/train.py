"""``segxai train``: train a segmentation network on synthetic cases, with checkpoints for TracIn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import TerminalProgress, UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segxai train``."""
    parser = subparsers.add_parser(
        "train", help="train a network on generated cases (writes card, weights, checkpoints, manifest)",
        description="Train the network a YAML config describes on synthetic tumour cases. Writes a model "
        "card, final weights, intermediate checkpoints and a training manifest (learning rates, "
        "training seeds) into --out. Ctrl-C stops early and keeps what was trained so far.",
    )
    parser.add_argument("--config", type=Path, required=True, help="training config (YAML), e.g. configs/demo3d.yaml")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="new (or empty) output folder")
    parser.add_argument("--steps", type=int, default=None, help="override schedule.steps of the config")
    parser.add_argument("--minutes", type=float, default=None, help="override time_budget_minutes of the config")
    parser.add_argument("--quiet", action="store_true", help="no log lines, only the progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Train and print where the card went."""
    from ..core.training.config import load_config, make_config
    from ..core.training.loop import train

    config = load_config(args.config)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be at least 1, got {args.steps}.")
        config["schedule"]["steps"] = args.steps
    if args.minutes is not None:
        if args.minutes <= 0:
            raise UserError(f"--minutes must be positive, got {args.minutes}.")
        config["time_budget_minutes"] = args.minutes
    config = make_config(config, source=str(args.config))
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    with TerminalProgress("train") as bar:
        result = train(config, args.out, progress=bar, log=log)
    print(f"{result.card} ({result.steps} steps, {result.seconds / 60:.1f} min, {result.stopped}, loss {result.final_loss:.4f})")
    return 0
