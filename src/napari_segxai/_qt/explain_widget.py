"""The "Explain" dock widget: per-class relevance maps of a case's segmentation, overlaid on its images.

What Run would explain (method, parameters and target) is published on the chosen case's image
layers as an :class:`~.targets.ExplainChoice`, so other widgets (Trust) can check the same thing
without reaching into this one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from napari.layers import Labels, Points, Shapes
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QBoxLayout,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QWidget,
)

from .._layers import Key
from ..core.attribution.base import DEFAULT_METHOD
from ..core.attribution.targets import skipped_line
from .compute_widget import ComputeWidget
from .cost_gate import CostGate
from .explain_display import iter_relevance_layer_data, magnitudes, strongest_layer
from .explain_parameters import ParameterForm
from .jobs import Outcome
from .relevance_view import RelevanceView
from .targets import TARGETS, ExplainChoice, publish, target_arguments
from .trust_badge import TrustBadge

if TYPE_CHECKING:
    import napari

VIEWER_CLICK = "last click in the viewer"
# Between two steps of adding layers: a zero timer would run the next step before Qt repaints and
# serves other timers, so two steps and a repaint would run back to back.
STEP_PAUSE_MS = 15


def explain_and_sort(*args, progress=None, should_cancel=None, gate=None, **kwargs) -> tuple:
    """explain_case (with the sequences' Shapley values, for RoI importance; its cost through ``gate`` first), then
    each class's sorted |relevance| for the colour limits, all in the worker thread."""
    from ..core.attribution import explain_case

    before = None if gate is None else (lambda cost: gate(cost, should_cancel))
    result = explain_case(*args, progress=progress, should_cancel=should_cancel, sequences=True, before=before,
                          **kwargs)
    return result, [magnitudes(maps) for maps in result.relevance]


class ExplainWidget(ComputeWidget):
    """Choose a case, classes, a target and a method; Run adds one relevance layer per class and modality."""

    noun = "explanation"
    verb = "Explaining"
    memory_hint = "choose a smaller batch_size, fewer classes or another device"
    compute = staticmethod(explain_and_sort)

    point: Optional[np.ndarray] = None   # world coordinates of the last click
    last: Optional[Outcome] = None       # the last explanation shown
    _adding = None                       # the steps still to do to show the last result
    _magnitudes: list = []               # per explained class of the last result: sorted |relevance|

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.cost = QLabel("")
        self.buttons.addWidget(self.cost)
        self.gate = CostGate(self.cost, self)
        self.method.setCurrentText(DEFAULT_METHOD)
        self.parameters.set_method(self.method.currentText())
        viewer.mouse_drag_callbacks.append(self._on_click)
        self._target_changed()

    def add_controls(self, form: QFormLayout) -> None:
        """Classes, the target and where it comes from, the output summed, the method and its parameters."""
        # Heavy imports (captum) happen here, when the widget is built, not at manifest read.
        from ..core.attribution import available_methods

        self.class_list = QListWidget()
        self.class_list.setToolTip("Classes to explain: one relevance map per class and modality.")
        self.class_list.setMaximumHeight(110)
        self.target = QComboBox()
        for text, kind in TARGETS:
            self.target.addItem(text, kind)
        self.target.setToolTip(
            "What is explained: each class's output summed over its predicted region, over a painted "
            "region (a labels layer's non-zero voxels, or the inside of a shapes layer's shapes), or at "
            "one point (click in the viewer, or a points layer)."
        )
        self.region_layer = QComboBox()
        self.region_layer.setToolTip("The labels layer whose non-zero voxels are the region, or the shapes layer "
                                     "whose shapes (drawn over the case's image) enclose it.")
        self.point_source = QComboBox()
        self.point_source.setToolTip("Where the point comes from: a click in the viewer, or a points layer's last point.")
        self.point_info = QLabel("No point clicked yet.")
        self.confident = QCheckBox("confident voxels only")
        self.confident.setToolTip("Keep only voxels of the predicted region whose class probability exceeds the threshold.")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 0.999)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(3)
        self.threshold.setValue(0.5)
        self.output_space = QComboBox()
        self.output_space.addItems(["logits", "probabilities"])
        self.output_space.setToolTip("Sum logits (default: probabilities saturate inside confident regions) or probabilities.")
        self.method = QComboBox()
        self.method.addItems(list(available_methods()))
        self.method.setToolTip("Attribution method; saliency is the fastest (one backward pass per class).")
        self.parameters = ParameterForm()
        self.method.currentTextChanged.connect(self.parameters.set_method)

        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.confident)
        threshold_row.addWidget(self.threshold)
        form.addRow("Classes", self.class_list)
        form.addRow("Target", self.target)
        form.addRow("Region layer", self.region_layer)
        form.addRow("Point from", self.point_source)
        form.addRow("", self.point_info)
        form.addRow("", threshold_row)
        form.addRow("Output", self.output_space)
        form.addRow("Method", self.method)
        form.addRow(self.parameters)
        self._trust_card = None
        self.trust = TrustBadge(self.check_trust)
        form.addRow("Trust", self.trust)
        self.method.currentTextChanged.connect(self.refresh_trust)
        self.target.currentIndexChanged.connect(self._target_changed)
        for signal in (self.region_layer.currentIndexChanged, self.point_source.currentIndexChanged,
                       self.confident.toggled, self.threshold.valueChanged, self.parameters.changed):
            signal.connect(self._publish)

    def add_results(self, layout: QBoxLayout) -> None:
        """The Display and export box, its controls and actions under the widget's own names."""
        self.display = RelevanceView(self.viewer)
        self.percentile, self.opacity = self.display.percentile, self.display.opacity
        self.grid_class, self.grid_button = self.display.grid_class, self.display.grid_button
        self.relevance_layers, self.set_grid_view = self.display.relevance_layers, self.display.set_grid_view
        self.export_relevance, self.save_picture = self.display.export_relevance, self.display.save_picture
        layout.addWidget(self.display)
        layout.addStretch(1)

    # ------------------------------------------------------------------ the case, its card and its classes

    def layers_changed(self, inserted: Any) -> None:
        """Offer the labels and shapes layers as regions and the points layers as points."""
        self._fill(self.region_layer, [layer.name for layer in self.viewer.layers if isinstance(layer, (Labels, Shapes))])
        self._fill(self.point_source, [VIEWER_CLICK] + [layer.name for layer in self.viewer.layers
                                                         if isinstance(layer, Points)])
        self._publish()

    def case_changed(self) -> None:
        """Publish what Run would explain on the newly chosen case."""
        self._publish()

    @staticmethod
    def _fill(box: QComboBox, names: list[str]) -> None:
        """Refill a combo box, keeping its current choice when it still exists."""
        current = box.currentText()
        box.blockSignals(True)
        box.clear()
        box.addItems(names)
        if current in names:
            box.setCurrentText(current)
        box.blockSignals(False)

    def card_cleared(self) -> None:
        """Forget the last card's classes and trust."""
        self.class_list.clear()
        self._trust_card = None
        self.refresh_trust()

    def card_chosen(self, card) -> str:
        """List the card's classes, those with a non-zero label ticked."""
        for index, info in enumerate(card.classes):
            item = QListWidgetItem(info.name)
            item.setData(Qt.ItemDataRole.UserRole, index)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if info.label != 0 else Qt.CheckState.Unchecked)
            self.class_list.addItem(item)
        self._trust_card = card
        self.refresh_trust()
        return super().card_chosen(card)

    # ------------------------------------------------------------------ the method's trust

    def refresh_trust(self, *_: Any) -> str:
        """Show the chosen method's measured trust for the chosen model; the badge's text."""
        return self.trust.show_for(self._trust_card, self.method.currentText())

    def check_trust(self) -> None:
        """Measure the chosen method's trust for the chosen model on the chosen case, in the background."""
        if self.trust.checking:
            show_warning("A trust check is already running; wait for it or press Stop.")
            return
        try:
            card, case = self.load_card(), self.chosen_case()
        except (ValueError, OSError) as err:
            self.refuse(err)
            return
        self.trust.measure(case, card, self.method.currentText(), device=self.chosen_device(),
                           memory_hint=self.memory_hint)

    def chosen_classes(self) -> list[int]:
        """Output indices of the ticked classes."""
        return [
            int(self.class_list.item(row).data(Qt.ItemDataRole.UserRole))
            for row in range(self.class_list.count())
            if self.class_list.item(row).checkState() == Qt.CheckState.Checked
        ]

    def set_classes(self, names: list[str]) -> None:
        """Tick exactly the named classes."""
        for row in range(self.class_list.count()):
            item = self.class_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    # ------------------------------------------------------------------ the target

    def choice(self) -> ExplainChoice:
        """What Run would explain now, from the controls."""
        source = self.point_source.currentText()
        return ExplainChoice(
            method=self.method.currentText(), parameters=self.parameters.values(), kind=self.target.currentData(),
            confident=self.confident.isChecked(), threshold=float(self.threshold.value()),
            region_layer=self.region_layer.currentText(), point_layer="" if source == VIEWER_CLICK else source,
            point=None if self.point is None else tuple(float(v) for v in self.point),
        )

    def _publish(self, *_: Any) -> None:
        """Record what Run would explain on the chosen case's image layers (withdrawn from other cases)."""
        chosen = self.case_choice.currentText()
        choice = self.choice()
        for name, layers in self.cases().items():
            publish(choice if name == chosen else None, layers)

    def _target_changed(self, *_: Any) -> None:
        """Enable only the controls the chosen target uses."""
        kind = self.target.currentData()
        self.region_layer.setEnabled(kind == "region")
        self.point_source.setEnabled(kind == "voxel")
        self.confident.setEnabled(kind == "predicted")
        self.threshold.setEnabled(kind in ("predicted", "uncertain"))
        self.threshold.setToolTip("uncertain voxels: the entropy (nats) above which a voxel counts as uncertain"
                                  if kind == "uncertain" else "predicted region: the class probability a confident "
                                  "voxel exceeds")
        self._publish()

    def set_point(self, world: Any) -> None:
        """Use ``world`` (viewer coordinates, mm) as the clicked point."""
        self.point = np.asarray(world, dtype=float)
        self.point_info.setText("Point: (" + ", ".join(f"{v:.1f}" for v in self.point) + ") mm")
        self._publish()

    def _on_click(self, viewer, event):
        """A click (press and release without dragging) in the viewer sets the point, when the target is a point."""
        if self.target.currentData() != "voxel" or self.point_source.currentText() != VIEWER_CLICK:
            return
        if viewer.dims.ndisplay != 2:
            self.point_info.setText("Switch to the 2D view to click a point (a 3D click has no depth).")
            return
        start = np.asarray(event.position, dtype=float)
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            self.set_point(start)

    def target_arguments(self, case) -> dict:
        """explain_case's target arguments from the controls (ValueError with a sentence when incomplete)."""
        return target_arguments(self.viewer, case, self.choice())

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether an explanation is in progress (computing, or its layers still being added)."""
        return self.jobs.running or self._adding is not None

    def run(self) -> None:
        """Explain the chosen case with the chosen card, classes, target and method in a worker thread."""
        if self._adding is not None and not self.jobs.running:
            show_warning("The last explanation's layers are still being added; run again in a moment.")
            return
        super().run()

    def job_options(self, case, card) -> dict:
        """Classes, target, method and output space (ValueError when one is missing)."""
        from ..core.attribution import get_method

        classes = self.chosen_classes()
        if not classes:
            raise ValueError("No class is ticked; tick the classes to explain.")
        target = self.target_arguments(case)
        method = get_method(self.method.currentText(), **self.parameters.values())
        return {"method": method, "classes": classes, "output_space": self.output_space.currentText(),
                "gate": self.gate, **target}

    def job_description(self, case, card, options: dict) -> str:
        """Explaining <case> with <method>."""
        return f"{self.verb} {case.name} with {options['method'].name}"

    def show_result(self, case, card, result) -> list:
        """Show a relevance computed elsewhere (e.g. by ``segxai demo``) as if this widget had run it."""
        if self.method.findText(result.method) >= 0:
            self.method.setCurrentText(result.method)
        self.show_outcome(Outcome(case=case, card=card, result=result))
        self.finish_adding()
        return self.relevance_layers()

    def show_outcome(self, outcome: Outcome) -> None:
        """Start adding the relevance layers, one step per turn of the event loop (main thread)."""
        sorted_magnitudes = None
        if isinstance(outcome.result, tuple):  # from explain_and_sort: the magnitudes are sorted already
            result, sorted_magnitudes = outcome.result
            outcome = dataclasses.replace(outcome, result=result)
        self.last = outcome
        self.display.set_outcome(None)
        self._adding = self._show(outcome, sorted_magnitudes)
        QTimer.singleShot(STEP_PAUSE_MS, self._add_next)

    def _add_next(self) -> None:
        """Do one step of adding layers, then let Qt paint and handle input before the next."""
        if self._adding is None:
            return
        if next(self._adding, None) is None:
            self._adding = None
            # outside the generator: starting a job lets Qt run timers
            self.trust.after_map(self.last, device=self.chosen_device(), memory_hint=self.memory_hint)
        else:
            QTimer.singleShot(STEP_PAUSE_MS, self._add_next)

    def finish_adding(self) -> None:
        """Add the remaining layers of the last explanation now."""
        while self._adding is not None:
            self._add_next()

    def _show(self, outcome: Outcome, sorted_magnitudes: Optional[list] = None):
        """Add one layer per class and modality, replacing same-named layers; yields between steps.

        Each step (sorting one class's magnitudes, adding one layer: 50-90 ms each) is short, so
        the viewer never freezes while a dozen full-size layers arrive.
        """
        result = outcome.result
        self._magnitudes = list(sorted_magnitudes or [])
        for maps in result.relevance[len(self._magnitudes):]:
            self._magnitudes.append(magnitudes(maps))
            yield True
        added = 0
        shown = strongest_layer(result)  # one layer visible: a dozen overlaid maps read as noise and draw slowly
        yield True
        for data, kwargs, _ in iter_relevance_layer_data(result, outcome.case,
                                                         percentile=self.percentile.value(),
                                                         opacity=self.opacity.value() / 100,
                                                         sorted_magnitudes=self._magnitudes):
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            self.viewer.add_image(data, visible=kwargs["name"] == shown, **kwargs)
            added += 1
            yield True
        self.viewer.layers.selection.active = self.viewer.layers[shown]
        self.display.set_outcome(outcome, self._magnitudes, self.viewer.layers[shown].metadata.get(Key.CLASS, ""))
        skipped = f" {skipped_line(result.skipped).capitalize()}." if result.skipped else ""
        zero = f" {result.zero_line()}." if result.zero_classes else ""
        self.status.setText(
            f"{added} relevance layers ({result.method}, {result.seconds:.1f} s; showing {shown}; the others are "
            f"in the layer list, or use Grid view): {result.target_description}.{skipped}{zero} "
            f"Trust: {self.refresh_trust()}."
        )

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running explanation, withdraw what this widget published and stop listening to clicks."""
        self._adding = None
        for layers in self.cases().values():
            publish(None, layers)
        if self._on_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_click)
        super().closeEvent(event)

    def runners(self) -> list:
        """The explanation's worker and the trust check's (both stop when the window closes)."""
        return [self.jobs, self.trust.jobs]
