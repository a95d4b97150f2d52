"""``segxai segment``: segment one case with a model card and write labels and probabilities as NIfTI."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import TerminalProgress, UserError, add_case_options, load_card, output_folder


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segment`` and its options."""
    parser = subparsers.add_parser(
        "segment",
        help="segment a case with a model and write the labels and class probabilities as NIfTI",
        description=(
            "Segment a case with a model card's network (sliding-window inference on the GPU when "
            "there is one) and write <case>_seg.nii.gz (label values of the card's classes) and "
            "<case>_prob.nii.gz (one probability per class, channels last) with the case's affine."
        ),
    )
    add_case_options(parser)
    return parser


def output_paths(case_name: str, out: Path) -> tuple[Path, Path]:
    """Where the labels and the probabilities of ``case_name`` are written in ``out``."""
    return out / f"{case_name}_seg.nii.gz", out / f"{case_name}_prob.nii.gz"


def run(args: argparse.Namespace) -> int:
    """Load the case and the card, segment, write the two NIfTI files and say where."""
    import numpy as np

    from ..core.case import load_case, save_nifti
    from ..core.model_card import build_network
    from ..core.segment import channel_indices, pick_device, segment

    folder = Path(args.case).expanduser().resolve()
    if folder.is_dir() and Path(args.out).expanduser().resolve() == folder:
        raise UserError(f"--out {args.out} is the case's own folder, where {output_paths(folder.name, folder)[0].name} "
                        "would be read as the case's reference label next time; choose another --out folder.")
    card = load_card(args)
    case = load_case(args.case)
    labels_path, prob_path = output_paths(case.name, Path(args.out))
    channel_indices(case, card)  # a missing modality is reported before any work starts
    output_folder(args.out)
    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    with TerminalProgress(f"segmenting {case.name}") as bar:
        result = segment(case, card, network=network, device=device, progress=bar)
    save_nifti(result.labels, result.affine, labels_path, protected=case.source_paths)
    save_nifti(np.moveaxis(result.probabilities, 0, -1), result.affine, prob_path, protected=case.source_paths)
    classes = ", ".join(f"{c.label}={c.name}" for c in result.classes)
    print(f"Segmented {case.name} with {card.name} on {result.device} in {result.seconds:.1f} s.")
    print(f"Labels ({classes}): {labels_path}")
    print(f"Probabilities ({len(result.classes)} classes, channels last): {prob_path}")
    return 0
