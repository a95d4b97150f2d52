"""The demo's viewer: the case, its segmentation and relevance, and every dock showing its result.

``segxai demo`` computes everything first (segmentation, relevance, RoI importance, TracIn
evidence, the trust check), then :func:`show_demo` lays the viewer out for a meeting: the image
with the segmentation outlined and the strongest relevance layer on top, axial through the tumour
centre, a caption with the Dice and the colour legend; on the right one tab group of Segment,
Explain (raised), Trust, RoI importance, Training evidence and View plane, so each dock has the
window's whole height. Each dock shows the demo's result as if the user had run it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

#: The demo window's size when the screen allows (a 1600 x 1000 virtual screen under ``make demo``).
WINDOW_SIZE = (1600, 1000)
#: The longest the demo waits for a dock's own background work (RoI summary, thumbnails) before the picture.
DOCK_WAIT_S = 120.0
LEGEND = "red: for the class · blue: against it"
#: The docks, tabbed in this order (Explain, Trust, RoI importance and Training evidence when their results exist).
DOCK_NAMES = {"segment": "Segment", "explain": "Explain", "trust": "Trust", "roi": "RoI importance",
              "evidence": "Training evidence"}
#: Width of the dock column beside the canvas, in pixels.
DOCK_WIDTH = 470


@dataclass(frozen=True)
class DemoResults:
    """What ``segxai demo`` computed, for the docks to show."""

    case: Any                       # core.case.Case
    card: Any                       # core.model.card.ModelCard
    segmentation: Any               # core.model.inference.Segmentation (with its domain check)
    relevance: Any = None           # core.attribution.Relevance, or None when nothing was explained
    influence: Any = None           # core.influence.InfluenceResult, or None
    trust: Any = None               # core.trust.CaseTrust of the relevance method, or None
    caption: str = ""               # what the canvas says first (model, case, Dice)


def show_demo(results: DemoResults, picture: Path, *, interactive: bool, shown_modality: str,
              started: Optional[float] = None, say: Callable[[str], None] = print) -> Path:
    """Open napari on the demo's results with every dock filled; save a picture; keep it open if interactive.

    ``started`` (``time.perf_counter()`` at the command's start) makes it say how long the command
    took until the full viewer was on screen.
    """
    import napari

    from .._layers import Role, case_layer_data, layer_role

    case = results.case
    viewer = napari.Viewer(title=f"SegXAI demo: {case.name}", show=True)
    for data, kwargs, kind in case_layer_data(case, visible_modality=shown_modality):
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if kind == "labels":
            layer.visible = False  # the ground truth stays one click away
    viewer.window.resize(*window_size())
    docks = _add_docks(viewer, results)
    segmentation = next(layer for layer in viewer.layers if layer_role(layer) == Role.SEGMENTATION)
    if results.relevance is not None:
        segmentation.contour = 1  # outlines, so the relevance inside the tumour shows
    caption = results.caption
    if results.relevance is not None:
        caption += f"\nShown: {viewer.layers.selection.active.name}\n{LEGEND}"
    viewer.scale_bar.visible = True
    viewer.text_overlay.text = caption
    viewer.text_overlay.position = "top_center"  # napari stacks it with the A instead of drawing across it
    viewer.text_overlay.font_size = 8
    viewer.text_overlay.visible = True
    settle(viewer)
    _wait_for_docks(docks)
    _dock_of(docks.get("explain", docks["segment"])).raise_()  # once every tab is laid out
    frame_tumour(viewer, segmentation, np.asarray(results.segmentation.affine), np.any(case.channels != 0, axis=0))
    settle(viewer)
    if started is not None:
        say(f"Full viewer {time.perf_counter() - started:.0f} s after the command started.")
    picture.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(picture), canvas_only=False, flash=False)
    _finish(viewer, interactive)
    return picture


def _finish(viewer, interactive: bool) -> None:
    """Hand the viewer to the user (napari's event loop), or close it after the picture."""
    import napari

    if interactive:
        napari.run()
    else:
        viewer.close()


def _add_docks(viewer, results: DemoResults) -> dict:
    """Add the View plane, Segment, Explain, Trust, RoI importance and Training evidence docks, each with its result."""
    from qtpy.QtCore import Qt

    from . import SegmentWidget
    from .evidence_widget import EvidenceWidget
    from .explain_widget import ExplainWidget
    from .jobs import Outcome
    from .orientation_widget import PlaneChoice
    from .roi_widget import RoiWidget
    from .trust_widget import TrustWidget

    case, card = results.case, results.card
    window = viewer.window
    main = window._qt_window
    segment = SegmentWidget(viewer)
    segment_dock = window.add_dock_widget(segment, name="Segment", area="right")
    segment.set_model_card(card.path, trusted=card.trusted)
    segment.show_outcome(Outcome(case=case, card=card, result=results.segmentation))
    docks: dict = {"segment": segment}
    if results.relevance is not None:
        docks["explain"] = explain = ExplainWidget(viewer)
        explain.set_model_card(card.path, trusted=card.trusted)
        explain.show_result(case, card, results.relevance)
        docks["roi"] = RoiWidget(viewer)  # summarises the relevance layers already in the viewer, in its worker
    if results.trust is not None:
        docks["trust"] = trust = TrustWidget(viewer)
        trust.set_model_card(card.path, trusted=card.trusted)
        if trust.method.findText(results.relevance.method) >= 0:
            trust.method.setCurrentText(results.relevance.method)
        trust.show_check(results.trust, case.name)
    if results.influence is not None:
        docks["evidence"] = evidence = EvidenceWidget(viewer)
        evidence.set_model_card(card.path, trusted=card.trusted)
        evidence.show_outcome(Outcome(case=case, card=card, result=results.influence))
    for key, name in DOCK_NAMES.items():  # one tab group beside the canvas, in the order of a review
        if key in docks and key != "segment":
            main.tabifyDockWidget(segment_dock, window.add_dock_widget(docks[key], name=name, area="right"))
    main.tabifyDockWidget(segment_dock, window.add_dock_widget(PlaneChoice(viewer), name="View plane", area="right"))
    main.resizeDocks([segment_dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    return docks


def _dock_of(widget):
    """The dock widget holding ``widget``."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def _wait_for_docks(docks: dict, timeout_s: float = DOCK_WAIT_S) -> None:
    """Let the RoI summary and the evidence thumbnails finish (bounded), so the picture shows them."""
    from qtpy.QtWidgets import QApplication

    def busy() -> bool:
        roi, evidence = docks.get("roi"), docks.get("evidence")
        return bool((roi is not None and (roi.running or roi.current() is None))
                    or (evidence is not None and evidence.drawing))

    deadline = time.monotonic() + timeout_s
    while busy() and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def _world_box(mask, affine):
    """World (mm) bounding box, (2, ndim), of the voxels of ``mask`` (of all voxels when none is set)."""
    import itertools

    ndim = mask.ndim
    where = np.argwhere(mask)
    lo, hi = (where.min(0), where.max(0)) if len(where) else (np.zeros(ndim), np.array(mask.shape) - 1)
    corners = np.array([[(lo, hi)[pick][axis] for axis, pick in enumerate(c)] for c in itertools.product((0, 1), repeat=ndim)])
    world = (affine @ np.c_[corners, np.ones(len(corners))].T)[:ndim].T
    return np.stack([world.min(0), world.max(0)])


def frame_tumour(viewer, segmentation, affine, anatomy) -> None:
    """An axial view (anterior up, radiological left-right) through the tumour's centre, zoomed on the anatomy."""
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
