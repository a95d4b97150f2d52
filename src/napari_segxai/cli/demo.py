"""``segxai demo``: segment the bundled demo case with the bundled model and show it in napari."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ..core.attribution.base import DEFAULT_METHOD
from ._common import (TerminalProgress, UserError, add_model_options, add_series_options, load_card, open_case,
                      output_folder)

# The modality shown under the segmentation: the one on which the demo's oedema shows best.
SHOWN_MODALITY = "flair"
# The maps ("where") use the default method, saliency: the one that passes model parameter randomisation
# for the bundled model (gradient x input does not); see core/attribution/base.py and docs/trust.md.
DEMO_METHOD = DEFAULT_METHOD
# "Which sequence carries each class" is answered by exact Shapley values over the input sequences
# (one forward pass per coalition of sequences, 2^4), not by the maps' shares: see docs/attribution.md, modality_shapley.
SUMMARY_METHOD = "modality_shapley"
#: The BraTS regions' usual abbreviations, for the viewer's caption.
BRATS_SHORT = {"whole_tumour": "WT", "tumour_core": "TC", "enhancing": "ET"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``demo`` and its options."""
    parser = subparsers.add_parser(
        "demo",
        help="segment the bundled demo case with the bundled model and show it in napari",
        description=(
            "Build the demo case (a tumour grown in MNI152 anatomy; written once to the user cache), or open "
            "--case, segment it with the bundled demo model (or --model), explain every predicted tumour class "
            "(--method), write the segmentation and the relevance maps as NIfTI to --out and a one-page case "
            "report (<out>/report/report.html and .png, with TracIn evidence), check the method's trust for "
            "the model (cached), then open napari on the case with the segmentation and the relevance over it "
            "and the Segment, Explain, Trust, RoI importance and Training evidence docks showing their "
            "results. It prints how long the command took until the full viewer. With --headless, or when there is "
            "no display, the viewer is shown only long enough to save a picture of it "
            "(<out>/demo_viewer.png); napari needs an X server for that, e.g. run under "
            "'xvfb-run -a'."
        ),
    )
    parser.add_argument(
        "--case", type=Path, default=None, metavar="PATH",
        help="run the same pipeline on your own case instead of the bundled one: a 3D or 4D NIfTI file, a folder "
             "with one NIfTI per modality, or a DICOM study (folder, .zip or multi-frame file)",
    )
    add_series_options(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("demo_out"), metavar="DIR",
        help="output folder for the segmentation and the viewer picture (default: demo_out)",
    )
    parser.add_argument(
        "--headless", action="store_true",
        help="do not keep napari open: save the viewer picture and exit (implied without a display)",
    )
    parser.add_argument(
        "--screenshot", type=Path, default=None, metavar="PATH",
        help="also copy the viewer picture to PATH (a .png), e.g. docs/screenshot.png",
    )
    add_model_options(parser)
    parser.add_argument(
        "--method", default=DEMO_METHOD, metavar="M",
        help=f"relevance method of the registry (see 'segxai explain --help'), or 'none' to skip "
             f"explaining; default: {DEMO_METHOD}",
    )
    parser.add_argument(
        "--no-influence", action="store_true",
        help="leave the TracIn training evidence out of the case report (<out>/report/report.html)",
    )
    parser.add_argument(
        "--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
        help="where to run the model; default: CUDA, then MPS, then CPU",
    )
    return parser


def has_display() -> bool:
    """Whether a window can be opened (an X or Wayland display on Linux; always elsewhere)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    """Segment the demo case, write the result, then show it (or save a picture of the viewer)."""
    import time

    from ..core.attribution import available_methods
    from ..core.io.generated_cases import demo_case_path
    from ..core.io.segmentation import write_segmentation
    from ..core.model.card import build_network
    from ..core.model.device import pick_device
    from ..core.model.inference import segment

    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise UserError(f"--screenshot must name a .png file, not {args.screenshot}.")
    if args.method != "none" and args.method not in available_methods():
        raise UserError(f"Unknown method {args.method!r}; choose one of {', '.join(available_methods())} or none.")
    started = time.perf_counter()
    card = load_card(args)
    out = output_folder(args.out)
    bundled = args.case is None
    if bundled:
        print("Preparing the demo case (the first run builds it; later runs reuse it)…", flush=True)
    case_path = demo_case_path() if bundled else args.case
    case = open_case(argparse.Namespace(**{**vars(args), "case": case_path}), card)
    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    with TerminalProgress(f"segmenting {case.name}") as bar:
        result = segment(case, card, network=network, device=device, progress=bar)
    labels_path, = write_segmentation(result, case.name, out, protected=case.source_paths, probabilities=False)
    print(f"Segmented {case.name} with {card.name} on {result.device} in {result.seconds:.1f} s.")
    if case.label is not None:
        print(f"Dice against the case's ground truth: {format_dice(result.labels, case.label)}.")
    print(f"{'Demo case' if bundled else 'Case'}: {case_path}")
    print(f"Segmentation: {labels_path}")
    relevance = report = trust = None
    if args.method != "none":
        relevance = explain_predicted(case, card, result, args.method, network, device, out)
    if relevance is not None:
        # The trust check runs beside the report (its own copy of the network: methods hook their network),
        # so the two share the CPU's cores instead of waiting for each other.
        import copy
        from concurrent.futures import ThreadPoolExecutor

        print(f"Checking the trust of {relevance.method} for {card.name} while the report is written…", flush=True)
        with ThreadPoolExecutor(max_workers=1) as background:
            checked = background.submit(check_trust, case, card, relevance.method, copy.deepcopy(network), device,
                                        bar=False)
            report = write_case_report(case, card, result, relevance, network, device, out / "report",
                                       influence=not args.no_influence)
            trust = checked.result()

    headless = args.headless or not has_display()
    if headless and not has_display():
        print(
            "No display, so no viewer picture: run 'xvfb-run -a segxai demo --headless' "
            "(or 'make demo') to get one."
        )
        return 0
    from .._qt.demo_viewer import DemoResults, show_demo

    caption = f"{card.name} · {case.name}\nsegmented in {result.seconds:.1f} s on {result.device}"
    if case.label is not None:
        caption += f"\nDice {format_dice(result.labels, case.label, short=True)}"
    results = DemoResults(case=case, card=card, segmentation=report.segmentation if report else result,
                          relevance=relevance, influence=report.influence if report else None, trust=trust,
                          caption=caption)
    picture = show_demo(results, out / "demo_viewer.png", interactive=not headless, shown_modality=SHOWN_MODALITY,
                        started=started)
    print(f"Viewer picture: {picture}")
    if args.screenshot is not None:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, args.screenshot)
        print(f"Copied to: {args.screenshot}")
    return 0


def explain_predicted(case, card, segmentation, method: str, network, device, out: Path):
    """Explain every predicted non-background class; write the maps; print which sequence carries each class.

    Returns the relevance (``None`` when no tumour class was predicted).
    """
    import numpy as np

    from ..core.attribution import explain_case
    from ..core.io.relevance import write_relevance

    present = {int(v) for v in np.unique(segmentation.labels)}
    classes = [i for i, info in enumerate(card.classes) if info.label != 0 and info.label in present]
    if not classes:
        print("The model predicted no tumour class on this case, so there is nothing to explain.")
        return None
    with TerminalProgress(f"explaining {case.name} ({method}, then which sequence carries each class)") as bar:
        relevance = explain_case(case, card, method=method, classes=classes, network=network, device=device,
                                 progress=bar, sequences=True)
    written = write_relevance(relevance, case.name, out, protected=case.source_paths,
                              details={"model_card": str(card.path), "model": card.name, "device": str(device)})
    print(f"Explained {', '.join(relevance.class_names)} with {relevance.method} in {relevance.seconds:.1f} s "
          f"({relevance.target_description}).")
    if relevance.zero_classes:
        print(f"{relevance.zero_line()}.")
    print(f"Relevance maps: {out} ({len(written) - 1} files)")
    n = len(relevance.channel_names)
    print(f"Which sequence carries each class ({SUMMARY_METHOD}: exact Shapley values of the {n} sequences from "
          f"their {2 ** n} coalitions; share of |value|, (-): lowers the class):")
    for line in relevance.sequences.lines():
        print(f"  {line}")
    return relevance


def write_case_report(case, card, segmentation, relevance, network, device, out: Path, *, influence: bool):
    """The one-page case report (HTML + PNG) from the demo's segmentation and relevance; say where it is; the report."""
    from ..core.report import build_report, write_report

    with TerminalProgress(f"case report on {case.name}") as bar:
        report = build_report(case, card, method=relevance.method, influence=influence, device=str(device),
                              network=network, segmentation=segmentation, relevance=relevance, progress=bar)
    written = write_report(report, output_folder(out))
    if report.influence is None:
        print(f"Case report without training evidence: {report.influence_note}")
    elif report.training_note:
        print(f"Case report: {report.training_note}")
    print(f"Case report: {written['html']} (and {written['png'].name} beside it)")
    return report


def check_trust(case, card, method: str, network, device, *, bar: bool = True):
    """The method's trust check for the model on this case (cascading randomisation, faithfulness), cached; printed.

    ``bar=False``: no progress bar (for a check that runs beside another step's bar).
    """
    import contextlib

    from ..core.trust.verdict import verdict_check

    with TerminalProgress(f"trust of {method} for {card.name}") if bar else contextlib.nullcontext() as progress:
        trust, verdicts = verdict_check(case, card, [method], device=device, network=network, progress=progress)
    for verdict in verdicts:
        print(verdict.sentence())
    return trust


def format_dice(prediction, reference, *, short: bool = False) -> str:
    """Dice per BraTS region (whole tumour, tumour core, enhancing), as one line (``short``: WT 0.95 · TC ...)."""
    from ..core.training.evaluate import region_dice

    scores = region_dice(prediction, reference)
    if short:
        return " · ".join(f"{BRATS_SHORT.get(name, name)} {value:.2f}" for name, value in scores.items())
    return ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in scores.items())
