"""``segxai synth``: write synthetic brain-tumour cases (MNI152 anatomy) as BraTS-style folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import TerminalProgress, UserError, output_folder


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segxai synth``."""
    parser = subparsers.add_parser(
        "synth", help="write synthetic tumour cases grown into the MNI152 anatomy",
        description="Write synthetic four-modality brain-tumour cases with known ground truth "
        "(labels 1 necrosis, 2 oedema, 4 enhancing; ground_truth.json with the per-modality signature).",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed + i (default 0)")
    parser.add_argument("--count", type=int, default=1, help="how many cases to write (default 1)")
    parser.add_argument(
        "--size", choices=["full", "toy"], default="full",
        help="full: MNI152 at 2 mm (99x117x95 voxels); toy: the same anatomy at 32^3 for quick tests",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder that receives one sub-folder per case")
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate and write the cases, one folder each."""
    from ..core.training.synth import generate_case
    from ..core.io.generated_cases import write_case

    if args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}.")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}.")
    out = output_folder(args.out)
    written = []
    with TerminalProgress("synth") as bar:
        for i in range(args.count):
            synth = generate_case(args.seed + i, size=args.size)
            written.append(write_case(synth, out / synth.case.name))
            bar(i + 1, args.count)
    for folder in written:
        print(folder)
    return 0
