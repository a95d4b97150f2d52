"""``segxai demo``: segment the bundled demo case with the bundled model and show it in napari."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ..core.attribution.base import DEFAULT_METHOD
from ._common import TerminalProgress, UserError, add_model_options, load_card, output_folder

# The modality shown under the segmentation: the one on which the demo's oedema shows best.
SHOWN_MODALITY = "flair"
WINDOW_SIZE = (1500, 900)
# The maps ("where") use the default method, saliency: the one that passes model parameter randomisation
# for the bundled model (gradient x input does not); see core/attribution/base.py and docs/trust.md.
DEMO_METHOD = DEFAULT_METHOD
# "Which sequence carries each class" is answered by exact Shapley values over the input sequences
# (one forward pass per coalition of sequences, 2^4), not by the maps' shares: see docs/attribution.md, modality_shapley.
SUMMARY_METHOD = "modality_shapley"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``demo`` and its options."""
    parser = subparsers.add_parser(
        "demo",
        help="segment the bundled demo case with the bundled model and show it in napari",
        description=(
            "Build the demo case (a tumour grown in MNI152 anatomy; written once to the user cache), "
            "segment it with the bundled demo model, explain every predicted tumour class (--method), "
            "write the segmentation and the relevance maps as NIfTI to --out and a one-page case report "
            "(<out>/report/report.html and .png, with TracIn evidence), then open napari on the "
            "case with the segmentation and the relevance over it. With --headless, or when there is "
            "no display, the viewer is shown only long enough to save a picture of it "
            "(<out>/demo_viewer.png); napari needs an X server for that, e.g. run under "
            "'xvfb-run -a'."
        ),
    )
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
    from ..core.attribution import available_methods
    from ..core.io.generated_cases import demo_case_path
    from ..core.io.nifti import load_case
    from ..core.io.segmentation import write_segmentation
    from ..core.model.card import build_network
    from ..core.model.device import pick_device
    from ..core.model.inference import segment

    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise UserError(f"--screenshot must name a .png file, not {args.screenshot}.")
    if args.method != "none" and args.method not in available_methods():
        raise UserError(f"Unknown method {args.method!r}; choose one of {', '.join(available_methods())} or none.")
    card = load_card(args)
    out = output_folder(args.out)
    print("Preparing the demo case (the first run builds it; later runs reuse it)…", flush=True)
    case_folder = demo_case_path()
    case = load_case(case_folder)
    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    with TerminalProgress(f"segmenting {case.name}") as bar:
        result = segment(case, card, network=network, device=device, progress=bar)
    labels_path, = write_segmentation(result, case.name, out, protected=case.source_paths, probabilities=False)
    print(f"Segmented {case.name} with {card.name} on {result.device} in {result.seconds:.1f} s.")
    if case.label is not None:
        print(f"Dice against the case's ground truth: {format_dice(result.labels, case.label)}.")
    print(f"Demo case: {case_folder}")
    print(f"Segmentation: {labels_path}")
    relevance = summary = None
    if args.method != "none":
        relevance, summary = explain_predicted(case, card, result, args.method, network, device, out)
    if relevance is not None:
        write_case_report(case, card, result, relevance, network, device, out / "report",
                          influence=not args.no_influence)

    headless = args.headless or not has_display()
    if headless and not has_display():
        print(
            "No display, so no viewer picture: run 'xvfb-run -a segxai demo --headless' "
            "(or 'make demo') to get one."
        )
        return 0
    picture = show(case, result, card, out / "demo_viewer.png", interactive=not headless, relevance=relevance,
                   summary=summary)
    print(f"Viewer picture: {picture}")
    if args.screenshot is not None:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, args.screenshot)
        print(f"Copied to: {args.screenshot}")
    return 0


def explain_predicted(case, card, segmentation, method: str, network, device, out: Path):
    """Explain every predicted non-background class; write the maps; print which sequence carries each class.

    Returns the relevance and the summary's lines (``None, None`` when no tumour class was predicted).
    """
    import numpy as np

    from ..core.attribution import explain_case
    from ..core.io.relevance import write_relevance

    present = {int(v) for v in np.unique(segmentation.labels)}
    classes = [i for i, info in enumerate(card.classes) if info.label != 0 and info.label in present]
    if not classes:
        print("The model predicted no tumour class on this case, so there is nothing to explain.")
        return None, None
    with TerminalProgress(f"explaining {case.name} ({method})") as bar:
        relevance = explain_case(case, card, method=method, classes=classes, network=network, device=device,
                                 progress=bar)
    written = write_relevance(relevance, case.name, out, protected=case.source_paths,
                              details={"model_card": str(card.path), "model": card.name, "device": str(device)})
    print(f"Explained {', '.join(relevance.class_names)} with {relevance.method} in {relevance.seconds:.1f} s "
          f"({relevance.target_description}).")
    print(f"Relevance maps: {out} ({len(written) - 1} files)")
    summary = sequence_summary(case, card, classes, network, device, relevance)
    for line in summary:
        print(f"  {line}")
    return relevance, summary


def sequence_summary(case, card, classes, network, device, relevance=None) -> list[str]:
    """Which sequence carries each class: modality_shapley's exact Shapley values, one line per class, largest first.

    Reuses ``relevance`` when it already is modality_shapley's; prints what was run and its seconds.
    """
    from ..core.attribution import explain_case
    from ..core.attribution.modality_shapley import sequence_values

    if relevance is None or relevance.method != SUMMARY_METHOD:
        with TerminalProgress(f"which sequence carries each class ({SUMMARY_METHOD})") as bar:
            relevance = explain_case(case, card, method=SUMMARY_METHOD, classes=classes, network=network,
                                     device=device, progress=bar)
    n = len(relevance.channel_names)
    print(f"Which sequence carries each class ({SUMMARY_METHOD}: exact Shapley values of the {n} sequences from "
          f"their {2 ** n} coalitions, {relevance.seconds:.1f} s; share of |value|, (-): lowers the class):")
    return sequence_values(relevance).lines()


def write_case_report(case, card, segmentation, relevance, network, device, out: Path, *, influence: bool) -> None:
    """The one-page case report (HTML + PNG) from the demo's segmentation and relevance; say where it is."""
    from ..core.report import build_report, write_report

    with TerminalProgress(f"case report on {case.name}") as bar:
        report = build_report(case, card, method=relevance.method, influence=influence, device=str(device),
                              network=network, segmentation=segmentation, relevance=relevance, progress=bar)
    written = write_report(report, output_folder(out))
    if report.influence is None:
        print(f"Case report without training evidence: {report.influence_note}")
    print(f"Case report: {written['html']} (and {written['png'].name} beside it)")


def format_dice(prediction, reference) -> str:
    """Dice per BraTS region (whole tumour, tumour core, enhancing), as one line."""
    from ..core.training.evaluate import region_dice

    scores = region_dice(prediction, reference)
    return ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in scores.items())


def show(case, result, card, picture: Path, *, interactive: bool, relevance=None, summary=None) -> Path:
    """Open napari on the case, its segmentation and relevance at the tumour's centre; save a picture; keep it open if interactive."""
    import napari
    import numpy as np

    from .._layers import case_layer_data, segmentation_layer_data
    from .._qt import SegmentWidget
    from .._qt.explain_widget import ExplainWidget
    from .._qt.orientation_widget import PlaneChoice

    viewer = napari.Viewer(title=f"SegXAI demo: {case.name}", show=True)
    for data, kwargs, kind in case_layer_data(case, visible_modality=SHOWN_MODALITY):
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if kind == "labels":
            layer.visible = False  # the ground truth stays one click away
    data, kwargs, _ = segmentation_layer_data(result, case, card.path)
    segmentation = viewer.add_labels(data, **kwargs)
    widget = SegmentWidget(viewer)
    widget.set_model_card(card.path, trusted=card.trusted)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    viewer.window.add_dock_widget(PlaneChoice(viewer), name="View plane", area="right")
    caption = f"{card.name} on {case.name} ({result.seconds:.1f} s, {result.device})"
    if case.label is not None:
        caption += f"\nDice: {format_dice(result.labels, case.label)}"
    if relevance is not None:
        explain = ExplainWidget(viewer)
        explain.set_model_card(card.path, trusted=card.trusted)
        viewer.window.add_dock_widget(explain, name="Explain", area="right")
        explain.show_result(case, card, relevance)
        shown = viewer.layers.selection.active.name
        segmentation.contour = 1  # outlines, so the relevance inside the tumour shows
        caption += f"\nShown: {shown} (red for the class, blue against it)"
    if summary:
        caption += f"\nWhich sequence carries each class ({SUMMARY_METHOD}):\n" + "\n".join(summary)
    viewer.scale_bar.visible = True
    viewer.text_overlay.text = caption
    viewer.text_overlay.position = "top_center"  # tiled above the A of the orientation letters
    viewer.text_overlay.visible = True
    viewer.window.resize(*window_size())
    settle(viewer)
    frame_tumour(viewer, segmentation, np.asarray(result.affine), np.any(case.channels != 0, axis=0))
    settle(viewer)
    picture.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(picture), canvas_only=False, flash=False)
    if interactive:
        napari.run()
    else:
        viewer.close()
    return picture


def _world_box(mask, affine):
    """World (mm) bounding box, (2, ndim), of the voxels of ``mask`` (of all voxels when none is set)."""
    import itertools

    import numpy as np

    ndim = mask.ndim
    where = np.argwhere(mask)
    lo, hi = (where.min(0), where.max(0)) if len(where) else (np.zeros(ndim), np.array(mask.shape) - 1)
    corners = np.array([[(lo, hi)[pick][axis] for axis, pick in enumerate(c)] for c in itertools.product((0, 1), repeat=ndim)])
    world = (affine @ np.c_[corners, np.ones(len(corners))].T)[:ndim].T
    return np.stack([world.min(0), world.max(0)])


def frame_tumour(viewer, segmentation, affine, anatomy) -> None:
    """An axial view (anterior up, radiological left-right) through the tumour's centre, zoomed on the anatomy."""
    import numpy as np

    from .._orientation import orient

    ndim = affine.shape[0] - 1
    foreground = np.argwhere(np.asarray(segmentation.data) > 0)
    centre = foreground.mean(axis=0) if len(foreground) else (np.array(segmentation.data.shape) - 1) / 2
    world = (affine @ np.r_[centre, 1.0])[:ndim]
    viewer.dims.ndisplay = 2
    orient(viewer, "axial")  # radiological, the R/L, A/P letters on the canvas edges
    viewer.dims.set_point(range(ndim), world)
    shown = list(viewer.dims.displayed)
    everything = np.asarray(viewer.layers.extent.world)[:, shown]
    box = _world_box(anatomy, affine)[:, shown]
    gain = np.min((everything[1] - everything[0]) / np.maximum(box[1] - box[0], 1e-6))
    viewer.camera.center = tuple((box[0] + box[1]) / 2)
    viewer.camera.zoom = viewer.camera.zoom * max(1.0, 0.85 * gain)


def window_size() -> tuple[int, int]:
    """The demo window's size: WINDOW_SIZE, shrunk to fit a smaller screen."""
    from qtpy.QtWidgets import QApplication

    screen = QApplication.primaryScreen()
    if screen is None:
        return WINDOW_SIZE
    available = screen.availableGeometry()
    return (min(WINDOW_SIZE[0], available.width()), min(WINDOW_SIZE[1], available.height()))


def settle(viewer, rounds: int = 5) -> None:
    """Let Qt lay out and paint the window before a picture is taken."""
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
