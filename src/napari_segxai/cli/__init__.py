"""The ``segxai`` command line: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# Each name is a module of this package with ``add_parser(subparsers)`` and ``run(args)``.
COMMANDS = ("demo", "synth", "train", "segment", "explain", "evaluate", "cohort", "influence", "influence_check", "trust", "report")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``segxai`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="segxai",
        description="Segment 3D medical images and explain the model's decisions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        command = module.add_parser(sub)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``segxai``; a user error prints one sentence and exits non-zero."""
    from ._common import UserError, Cancelled

    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"segxai {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Cancelled:
        print(f"segxai {args.command}: cancelled.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"segxai {args.command}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
