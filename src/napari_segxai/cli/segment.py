"""``segxai segment``: segment one case with a model card and write labels and probabilities as NIfTI."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (TerminalProgress, UserError, add_case_options, add_format_option, check_format, load_card,
                      open_case, output_folder)
from ._explain_options import add_uncertainty_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segment`` and its options."""
    parser = subparsers.add_parser(
        "segment",
        help="segment a case with a model and write the labels and class probabilities as NIfTI",
        description=(
            "Segment a case with a model card's network (sliding-window inference on the GPU when "
            "there is one) and write <case>_seg.nii.gz (label values of the card's classes) and "
            "<case>_prob.nii.gz (one probability per class, channels last) with the case's affine; with "
            "--format dicom, <case>_seg.dcm: a DICOM SEG over the study's reference series. With "
            "--uncertainty, also <case>_entropy.nii.gz and <case>_mutual_information.nii.gz: where the model is "
            "unsure (predictive entropy) and where an ensemble of its predictions disagrees (mutual "
            "information), per voxel in nats, with the case's affine (docs/uncertainty.md). Labels where no "
            "input sequence has signal (outside the head) are removed and counted, and a domain check says "
            "whether the case is like the model's training cases (docs/domain.md)."
        ),
    )
    add_case_options(parser)
    add_format_option(parser, "<case>_seg.dcm, a DICOM SEG; the probabilities are written in NIfTI only")
    add_uncertainty_option(parser, "write the uncertainty maps of an ensemble of predictions made this way")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the case and the card, segment, write the two NIfTI files and say where."""
    from ..core.io.segmentation import output_paths, write_segmentation
    from ..core.model.card import build_network
    from ..core.model.preprocess import channel_indices
    from ..core.model.device import pick_device
    from ..core.model.domain import check_domain
    from ..core.model.inference import segment

    folder = Path(args.case).expanduser().resolve()
    if folder.is_dir() and Path(args.out).expanduser().resolve() == folder:
        raise UserError(f"--out {args.out} is the case's own folder, where {output_paths(folder.name, folder)[0].name} "
                        "would be read as the case's reference label next time; choose another --out folder.")
    if args.uncertainty == "dropout" and args.dropout_samples < 2:
        raise UserError(f"--dropout-samples {args.dropout_samples} is too few for MC dropout; give 2 or more (8 by default).")
    card = load_card(args)
    case = open_case(args, card)
    labels_path, prob_path = output_paths(case.name, Path(args.out))
    channel_indices(case, card)  # a missing modality is reported before any work starts
    check_format(args, case)
    output_folder(args.out)
    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    measured = None
    if args.uncertainty is None:
        with TerminalProgress(f"segmenting {case.name}") as bar:
            result = segment(case, card, network=network, device=device, progress=bar)
    else:
        from ..core.model.uncertainty import segment_with_uncertainty
        from ..core.model.uncertainty_members import plan_members

        plan_members(case, card, args.uncertainty, network=network, device=device,  # a refusal comes before any work
                     samples=args.dropout_samples)
        with TerminalProgress(f"segmenting {case.name} with {args.uncertainty} uncertainty") as bar:
            result, measured = segment_with_uncertainty(case, card, args.uncertainty, network=network, device=device,
                                                        samples=args.dropout_samples, progress=bar)
    classes = ", ".join(f"{c.label}={c.name}" for c in result.classes)
    print(f"Segmented {case.name} with {card.name} on {result.device} in {result.seconds:.1f} s.")
    print(f"Removed {result.outside_removed} labelled voxels outside the head (no signal in any input sequence).")
    with TerminalProgress(f"checking {case.name} against {card.name}'s training set") as bar:
        domain = check_domain(case, card, network=network, device=device, segmentation=result, progress=bar)
    print(f"Domain: {domain.describe()}")
    if args.format in ("nifti", "both"):
        write_segmentation(result, case.name, args.out, protected=case.source_paths)
        print(f"Labels ({classes}): {labels_path}")
        print(f"Probabilities ({len(result.classes)} classes, channels last): {prob_path}")
    if args.format in ("dicom", "both"):
        from ..core.io.dicom_results import write_segmentation_dicom

        path = write_segmentation_dicom(result, case, card.name, args.out)
        print(f"DICOM SEG ({classes}; over series {case.name}'s reference series): {path}")
    if measured is not None:
        from ..core.model.uncertainty import write_uncertainty

        entropy_path, mutual_path = write_uncertainty(measured, case.name, args.out, protected=case.source_paths)
        print(f"Uncertainty: {measured.describe()}, in {measured.seconds:.1f} s.")
        print(f"Entropy (nats): {entropy_path}")
        print(f"Mutual information (nats): {mutual_path}")
    return 0
