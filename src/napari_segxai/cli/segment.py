"""``segxai segment``: segment one case with a model card and write labels and probabilities as NIfTI."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import TerminalProgress, UserError, add_case_options, output_folder


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
    parser.add_argument(
        "--trust-model", action="store_true",
        help="allow full unpickling of a .pt/.pth weights file (this runs code from the file: "
             "use only for files from a source you trust); same as 'trusted: true' in the card",
    )
    return parser


def output_paths(case_name: str, out: Path) -> tuple[Path, Path]:
    """Where the labels and the probabilities of ``case_name`` are written in ``out``."""
    return out / f"{case_name}_seg.nii.gz", out / f"{case_name}_prob.nii.gz"


def run(args: argparse.Namespace) -> int:
    """Load the case and the card, segment, write the two NIfTI files and say where."""
    import dataclasses

    import numpy as np

    from ..core.case import load_case, save_nifti
    from ..core.model_card import build_network, default_model_card, load_model_card
    from ..core.segment import channel_indices, pick_device, segment

    card = default_model_card() if args.model is None else load_model_card(args.model)
    if args.trust_model and not card.trusted:
        card = dataclasses.replace(card, trusted=True)
    case = load_case(args.case)
    labels_path, prob_path = output_paths(case.name, Path(args.out))
    protected = {Path(p).resolve() for p in case.source_paths}
    for path in (labels_path, prob_path):
        if path.resolve() in protected:
            raise UserError(f"Refusing to overwrite {path}: the case was loaded from it; choose another --out folder.")

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
