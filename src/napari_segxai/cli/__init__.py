"""The ``segxai`` command line: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# Each name is a module of this package with ``add_parser(subparsers)`` and ``run(args)``.
COMMANDS = ("demo", "synth", "train", "card", "convert", "segment", "explain", "evaluate", "cohort", "influence", "influence_check", "trust", "report", "inspect")


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
    except Exception as err:
        what = out_of_memory(err)
        if what is None:
            raise  # a programming error keeps its traceback
        print(f"segxai {args.command}: error: {what}", file=sys.stderr)
        return 1


def out_of_memory(err: BaseException) -> Optional[str]:
    """One sentence for a MemoryError or a torch out-of-memory error (what ran out, what to try); None otherwise."""
    torch = sys.modules.get("torch")  # only a command that imported torch can run out of GPU memory
    # torch.cuda.OutOfMemoryError is torch.OutOfMemoryError (torch >= 2.5) and exists in older torch too
    if torch is not None and isinstance(err, torch.cuda.OutOfMemoryError):
        return ("the GPU ran out of memory; give the model card smaller windows (inference: roi_size) or a "
                "smaller sw_batch_size, or run on the CPU with --device cpu.")
    if isinstance(err, MemoryError):
        return ("the computer ran out of memory (RAM); give the model card smaller windows (inference: roi_size) "
                "or a smaller sw_batch_size, or close other programs.")
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
