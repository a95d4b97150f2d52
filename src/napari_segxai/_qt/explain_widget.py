"""The "Explain" dock widget: per-class relevance maps of a case's segmentation, overlaid on its images."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .._layers import case_from_layers, layer_world_affine
from .explain_display import (
    DEFAULT_OPACITY,
    DEFAULT_PERCENTILE,
    magnitudes,
    relevance_layer_data,
    relevance_limits,
    strongest_layer,
)
from .explain_parameters import ParameterForm
from .card_choice import CardChoice
from .jobs import JobRunner, Outcome

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")
TARGETS = (("predicted region", "predicted"), ("painted region", "region"), ("clicked point", "voxel"))
DEFAULT_METHOD = "saliency"
VIEWER_CLICK = "last click in the viewer"


def explain_and_sort(*args, progress=None, should_cancel=None, **kwargs) -> tuple:
    """explain_case, then each class's sorted |relevance| for the colour limits, both in the worker thread."""
    from ..core.attribution import explain_case

    result = explain_case(*args, progress=progress, should_cancel=should_cancel, **kwargs)
    return result, [magnitudes(maps) for maps in result.relevance]


def shapes_region(layer: Shapes, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The voxels of a grid (``shape``, voxel -> world ``affine``) enclosed by the shapes of a shapes layer.

    Each shape is carried from the layer's data coordinates through world coordinates onto the
    grid, so a layer drawn with another scale or affine than the case's images still lands where
    it was drawn; napari's ``to_masks`` then rasterises it in the slice of the grid it lies in.
    """
    ndim = len(shape)
    if layer.ndim != ndim:
        raise ValueError(f"The shapes layer {layer.name!r} has {layer.ndim} dimensions but the case has {ndim}; "
                         f"draw the region on a new shapes layer over the case's image.")
    if len(layer.data) == 0:
        raise ValueError(f"The shapes layer {layer.name!r} has no shape; draw the region to explain first.")
    to_grid = np.linalg.solve(np.asarray(affine, dtype=float), layer_world_affine(layer))
    by_order: dict[tuple[int, ...], tuple[list, list]] = {}
    for vertices, kind in zip(layer.data, layer.shape_type):
        points = np.asarray(vertices, dtype=float) @ to_grid[:ndim, :ndim].T + to_grid[:ndim, ndim]
        flat = [a for a in range(ndim) if np.ptp(points[:, a]) < 1e-3]
        if len(flat) < ndim - 2:
            raise ValueError(f"A shape of layer {layer.name!r} does not lie in one slice of the case's grid (the layer "
                             "is rotated against the case); draw it in a 2D view on a shapes layer over the case.")
        sliced = flat[: ndim - 2]
        if any(not -0.5 <= points[0, a] < shape[a] - 0.5 for a in sliced):
            continue  # drawn on a slice outside the case
        # napari rasterises a shape in its last two axes, at the slice its other axes give
        order = tuple(sliced + [a for a in range(ndim) if a not in sliced])
        group = by_order.setdefault(order, ([], []))
        group[0].append(points[:, order])
        group[1].append(kind)
    region = np.zeros(shape, dtype=bool)
    for order, (data, kinds) in by_order.items():
        masks = Shapes(data, shape_type=kinds, ndim=ndim).to_masks(tuple(shape[a] for a in order))
        region |= np.transpose(masks.any(0), np.argsort(order))
    return region


# Between two steps of adding layers: a zero timer would run the next step before Qt repaints and
# serves other timers, so two steps and a repaint would run back to back.
STEP_PAUSE_MS = 15


class ExplainWidget(CardChoice, QWidget):
    """Choose a case, classes, a target and a method; Run adds one relevance layer per class and modality."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        # Heavy imports (torch, MONAI, captum) happen here, when the widget is built, not at manifest read.
        from ..core.attribution import available_methods

        self.viewer = viewer
        self.point: Optional[np.ndarray] = None   # world coordinates of the last click
        self.last: Optional[Outcome] = None       # the last explanation shown
        self._grid_saved: Optional[dict] = None
        self._magnitudes: list[np.ndarray] = []    # per explained class: sorted |relevance| for percentiles
        self._adding = None                        # the steps still to do to show the last result

        # --- what to explain
        self.case_choice = QComboBox()
        self.case_choice.setToolTip("The case: its image layers (one per modality) are the model's input.")
        self.case_choice.currentIndexChanged.connect(self._case_changed)
        self.card_path = QLineEdit()
        self.card_path.setPlaceholderText("model card (.yaml)")
        self.card_path.editingFinished.connect(self._card_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_card)
        self.card_info = QLabel()
        self.card_info.setWordWrap(True)
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
        self.target.currentIndexChanged.connect(self._target_changed)
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

        # --- how
        self.method = QComboBox()
        self.method.addItems(list(available_methods()))
        self.method.setToolTip("Attribution method; saliency is the fastest (one backward pass per class).")
        self.parameters = ParameterForm()
        self.method.currentTextChanged.connect(self.parameters.set_method)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto: CUDA, then MPS, then CPU")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self, self.progress_bar, self.status, self.cancel_button, noun="explanation")

        # --- display and export
        self.percentile = QDoubleSpinBox()
        self.percentile.setRange(50.0, 100.0)
        self.percentile.setDecimals(1)
        self.percentile.setSingleStep(0.5)
        self.percentile.setValue(DEFAULT_PERCENTILE)
        self.percentile.setToolTip("Colour scale ends at this percentile of |relevance| (per class, all modalities).")
        self.percentile.valueChanged.connect(self._restyle)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(DEFAULT_OPACITY * 100))
        self.opacity.valueChanged.connect(self._restyle)
        self.grid_class = QComboBox()
        self.grid_class.setToolTip("The class whose maps the grid view shows, one modality per cell.")
        self.grid_button = QPushButton("Grid view")
        self.grid_button.setCheckable(True)
        self.grid_button.setToolTip("Each modality with its relevance side by side, in linked views.")
        self.grid_button.toggled.connect(self.set_grid_view)
        self.save_maps_button = QPushButton("Save relevance…")
        self.save_maps_button.setToolTip("One NIfTI per class (channels = modalities) with the case's affine, and a JSON record.")
        self.save_maps_button.clicked.connect(self._choose_export_folder)
        self.save_picture_button = QPushButton("Save picture…")
        self.save_picture_button.setToolTip("A PNG of the current view.")
        self.save_picture_button.clicked.connect(self._choose_picture_path)

        card_row = QHBoxLayout()
        card_row.addWidget(self.card_path)
        card_row.addWidget(browse)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.confident)
        threshold_row.addWidget(self.threshold)
        what = QFormLayout()
        what.addRow("Case", self.case_choice)
        what.addRow("Model card", card_row)
        what.addRow("", self.card_info)
        what.addRow("Classes", self.class_list)
        what.addRow("Target", self.target)
        what.addRow("Region layer", self.region_layer)
        what.addRow("Point from", self.point_source)
        what.addRow("", self.point_info)
        what.addRow("", threshold_row)
        what.addRow("Output", self.output_space)
        how = QFormLayout()
        how.addRow("Method", self.method)
        how.addRow(self.parameters)
        how.addRow("Device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        display = QFormLayout()
        display.addRow("Percentile", self.percentile)
        display.addRow("Opacity", self.opacity)
        grid_row = QHBoxLayout()
        grid_row.addWidget(self.grid_class)
        grid_row.addWidget(self.grid_button)
        display.addRow("Grid", grid_row)
        export_row = QHBoxLayout()
        export_row.addWidget(self.save_maps_button)
        export_row.addWidget(self.save_picture_button)
        display.addRow(export_row)
        display_box = QGroupBox("Display and export")
        display_box.setLayout(display)
        layout = QVBoxLayout(self)
        layout.addLayout(what)
        layout.addLayout(how)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(display_box)
        layout.addStretch(1)

        self.method.setCurrentText(DEFAULT_METHOD)
        self.parameters.set_method(self.method.currentText())
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        viewer.mouse_drag_callbacks.append(self._on_click)
        self._refresh_layers()
        self._target_changed()

    # ------------------------------------------------------------------ the case and its card

    def cases(self) -> dict[str, list[Image]]:
        """Image layers grouped by case (the reader's ``segxai_case``; a layer without one is its own case)."""
        groups: dict[str, list[Image]] = {}
        for layer in self.viewer.layers:
            if not isinstance(layer, Image) or layer.rgb:
                continue
            meta = layer.metadata or {}
            if meta.get("segxai_role", "image") != "image":
                continue
            groups.setdefault(str(meta.get("segxai_case") or layer.name), []).append(layer)
        return groups

    def case_layers(self) -> list[Image]:
        """The image layers of the chosen case."""
        return self.cases().get(self.case_choice.currentText(), [])

    def _refresh_layers(self, event: Any = None) -> None:
        """Update the case, region and point lists; a new case or segmentation becomes the choice."""
        inserted = getattr(event, "value", None) if event is not None and event.type == "inserted" else None
        cases = list(self.cases())
        current = self.case_choice.currentText()
        newest = None
        if inserted is not None and isinstance(inserted, Image):
            newest = (inserted.metadata or {}).get("segxai_case") or inserted.name
        self.case_choice.blockSignals(True)
        self.case_choice.clear()
        self.case_choice.addItems(cases)
        chosen = newest if newest in cases else current if current in cases else (cases[-1] if cases else "")
        self.case_choice.setCurrentText(chosen)
        self.case_choice.blockSignals(False)
        self._fill(self.region_layer, [layer.name for layer in self.viewer.layers if isinstance(layer, (Labels, Shapes))])
        self._fill(self.point_source, [VIEWER_CLICK] + [layer.name for layer in self.viewer.layers
                                                         if isinstance(layer, Points)])
        segmentation_added = (inserted is not None and isinstance(inserted, Labels)
                              and (inserted.metadata or {}).get("segxai_role") == "segmentation")
        if chosen != current or segmentation_added or not self.card_path.text():
            self._case_changed()

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

    def _card_changed(self) -> None:
        """List the card's classes (those with a non-zero label ticked), or say why the card is unusable."""
        self.class_list.clear()
        if not self.card_path.text().strip():
            self.card_info.setText("No model card chosen.")
            return
        try:
            card = self._load_card()
        except (ValueError, OSError) as err:
            self.card_info.setText(str(err))
            return
        self.card_info.setText(f"{card.name}: {', '.join(card.modalities)} → {', '.join(card.class_names)}")
        for index, info in enumerate(card.classes):
            item = QListWidgetItem(info.name)
            item.setData(Qt.ItemDataRole.UserRole, index)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if info.label != 0 else Qt.CheckState.Unchecked)
            self.class_list.addItem(item)

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

    def _target_changed(self, *_: Any) -> None:
        """Enable only the controls the chosen target uses."""
        kind = self.target.currentData()
        self.region_layer.setEnabled(kind == "region")
        self.point_source.setEnabled(kind == "voxel")
        self.confident.setEnabled(kind == "predicted")
        self.threshold.setEnabled(kind == "predicted")

    def set_point(self, world: Any) -> None:
        """Use ``world`` (viewer coordinates, mm) as the clicked point."""
        self.point = np.asarray(world, dtype=float)
        self.point_info.setText("Point: (" + ", ".join(f"{v:.1f}" for v in self.point) + ") mm")

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
        kind = self.target.currentData()
        if kind == "predicted":
            return {"target": "predicted", "confident": self.confident.isChecked(),
                    "threshold": float(self.threshold.value())}
        if kind == "region":
            name = self.region_layer.currentText()
            if not name or name not in self.viewer.layers:
                raise ValueError("No labels or shapes layer to take the region from; paint or draw one first.")
            layer = self.viewer.layers[name]
            if isinstance(layer, Shapes):
                region = shapes_region(layer, case.shape, case.affine)
                if not region.any():
                    raise ValueError(f"The shapes of layer {name!r} cover no voxel of the case; draw them over the "
                                     "case's image.")
                return {"target": "region", "region": region}
            region = np.asarray(layer.data) > 0
            if region.shape != case.shape or not np.allclose(layer_world_affine(layer), case.affine, atol=1e-4):
                raise ValueError(f"The labels layer {name!r} is not on the case's grid; paint the region on a labels "
                                 "layer made for this case (same shape and position).")
            if not region.any():
                raise ValueError(f"The labels layer {name!r} is empty; paint the region to explain first.")
            return {"target": "region", "region": region}
        source = self.point_source.currentText()
        if source and source != VIEWER_CLICK and source in self.viewer.layers:
            points = self.viewer.layers[source]
            if len(points.data) == 0:
                raise ValueError(f"The points layer {source!r} has no point; add one where to explain.")
            world = np.asarray(points.data_to_world(points.data[-1]), dtype=float)
        elif self.point is not None:
            world = self.point
        else:
            raise ValueError("No point is chosen; click on the image (with 'clicked point' as target) first.")
        world = world[-len(case.shape):]
        voxel = np.linalg.solve(case.affine, np.append(world, 1.0))[: len(case.shape)]
        if np.any(voxel < -0.5) or np.any(voxel > np.array(case.shape) - 0.5):
            raise ValueError("The chosen point lies outside the case's image; click inside it.")
        return {"target": "voxel", "voxel": tuple(float(v) for v in voxel)}

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether an explanation is in progress (computing, or its layers still being added)."""
        return self.jobs.running or self._adding is not None

    def run(self) -> None:
        """Explain the chosen case with the chosen card, classes, target and method in a worker thread."""
        from ..core.attribution import get_method
        from ..core.segment import channel_indices

        if self.jobs.refuse_if_running():
            return
        if self._adding is not None:
            show_warning("The last explanation's layers are still being added; run again in a moment.")
            return
        try:
            card = self._load_card()
            case = case_from_layers(self.case_layers())
            channel_indices(case, card)
            classes = self.chosen_classes()
            if not classes:
                raise ValueError("No class is ticked; tick the classes to explain.")
            target = self.target_arguments(case)
            method = get_method(self.method.currentText(), **self.parameters.values())
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        device = self.device.currentText()
        self.jobs.start(
            partial(explain_and_sort, case, card, method=method, classes=classes,
                    output_space=self.output_space.currentText(),
                    device=None if device == "auto" else device, **target),
            case, card, verb="Explaining",
            memory_hint="choose a smaller batch_size, fewer classes or another device",
            description=f"Explaining {case.name} with {method.name}", on_result=self._on_result,
        )

    def cancel(self) -> None:
        """Ask the running explanation to stop at its next step."""
        self.jobs.cancel()

    def show_result(self, case, card, result) -> list:
        """Show a relevance computed elsewhere (e.g. by ``segxai demo``) as if this widget had run it."""
        if self.method.findText(result.method) >= 0:
            self.method.setCurrentText(result.method)
        self._on_result(Outcome(case=case, card=card, result=result))
        self.finish_adding()
        return self.relevance_layers()

    def _on_result(self, outcome: Outcome) -> None:
        """Start adding the relevance layers, one step per turn of the event loop (main thread)."""
        if self.grid_button.isChecked():
            self.grid_button.setChecked(False)
        sorted_magnitudes = None
        if isinstance(outcome.result, tuple):  # from explain_and_sort: the magnitudes are sorted already
            result, sorted_magnitudes = outcome.result
            outcome = dataclasses.replace(outcome, result=result)
        self.last = outcome
        self._adding = self._show(outcome, sorted_magnitudes)
        QTimer.singleShot(STEP_PAUSE_MS, self._add_next)

    def _add_next(self) -> None:
        """Do one step of adding layers, then let Qt paint and handle input before the next."""
        if self._adding is None:
            return
        if next(self._adding, None) is None:
            self._adding = None
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
        for data, kwargs, _ in relevance_layer_data(result, outcome.case,
                                                    percentile=self.percentile.value(),
                                                    opacity=self.opacity.value() / 100,
                                                    sorted_magnitudes=self._magnitudes):
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            self.viewer.add_image(data, visible=kwargs["name"] == shown, **kwargs)
            added += 1
            yield True
        self.viewer.layers.selection.active = self.viewer.layers[shown]
        self.grid_class.clear()
        self.grid_class.addItems(list(result.class_names))
        self.status.setText(
            f"{added} relevance layers ({result.method}, {result.seconds:.1f} s; showing {shown}; the others are "
            f"in the layer list, or use Grid view): {result.target_description}."
        )

    # ------------------------------------------------------------------ display

    def relevance_layers(self, class_name: Optional[str] = None) -> list[Image]:
        """The layers of the last explanation (of one class when named), in modality order."""
        if self.last is None:
            return []
        result = self.last.result
        layers = []
        for layer in self.viewer.layers:
            meta = layer.metadata or {}
            if (meta.get("segxai_role") == "relevance" and meta.get("segxai_case") == self.last.case.name
                    and meta.get("segxai_method") == result.method
                    and (class_name is None or meta.get("segxai_class") == class_name)):
                layers.append(layer)
        return layers

    def _restyle(self, *_: Any) -> None:
        """Apply the percentile and opacity controls to the last explanation's layers."""
        if self.last is None or self._adding is not None:
            return
        result = self.last.result
        for k, class_name in enumerate(result.class_names):
            limits = relevance_limits(result.relevance[k], self.percentile.value(), result.signed,
                                      sorted_magnitudes=self._magnitudes[k])
            for layer in self.relevance_layers(class_name):
                layer.contrast_limits = limits
                layer.opacity = self.opacity.value() / 100

    def set_grid_view(self, enabled: bool) -> None:
        """Show each modality with the chosen class's relevance over it, side by side in linked views (or undo)."""
        grid = self.viewer.canvas.grid
        if not enabled:
            if self._grid_saved is not None:
                for layer in self.viewer.layers:
                    if id(layer) in self._grid_saved["visible"]:
                        layer.visible = self._grid_saved["visible"][id(layer)]
                grid.stride = self._grid_saved["stride"]
                self._grid_saved = None
            grid.enabled = False
            self._reset_view_soon()
            if self.grid_button.isChecked():
                self.grid_button.blockSignals(True)
                self.grid_button.setChecked(False)
                self.grid_button.blockSignals(False)
            return
        class_name = self.grid_class.currentText()
        maps = self.relevance_layers(class_name)
        if not maps:
            show_warning("Run an explanation first; the grid shows its maps beside the images.")
            self.grid_button.blockSignals(True)
            self.grid_button.setChecked(False)
            self.grid_button.blockSignals(False)
            return
        images = {(layer.metadata or {}).get("segxai_modality") or layer.name: layer
                  for layer in self.cases().get(self.last.case.name, [])}
        cells = []
        for relevance in maps:
            image = images.get(relevance.metadata.get("segxai_modality"))
            cells.append((image, relevance) if image is not None else (relevance,))
        paired = all(len(cell) == 2 for cell in cells)
        shown = [layer for cell in cells for layer in cell] if paired else list(maps)
        self._grid_saved = {"visible": {id(layer): layer.visible for layer in self.viewer.layers},
                            "stride": grid.stride}
        for position, layer in enumerate(shown):
            self.viewer.layers.move(self.viewer.layers.index(layer), position)
        for layer in self.viewer.layers:
            layer.visible = any(layer is s for s in shown)
        grid.stride = 2 if paired else 1
        grid.enabled = True
        self._reset_view_soon()
        if not self.grid_button.isChecked():
            self.grid_button.blockSignals(True)
            self.grid_button.setChecked(True)
            self.grid_button.blockSignals(False)

    def _reset_view_soon(self) -> None:
        """Fit the view now and again once the canvas has rebuilt its grid of views."""
        self.viewer.reset_view()
        QTimer.singleShot(0, self.viewer.reset_view)

    # ------------------------------------------------------------------ export

    def export_relevance(self, folder: str | Path) -> dict[str, str]:
        """Write the last explanation as NIfTI (one per class, channels = modalities) and JSON into ``folder``."""
        from ..cli.explain import write_relevance

        if self.last is None:
            raise ValueError("There is no explanation to save yet; press Run first.")
        case, card, result = self.last.case, self.last.card, self.last.result
        details = {"model_card": str(card.path), "model": card.name,
                   "class_labels": [card.classes[i].label for i in result.class_indices]}
        return write_relevance(result, case.name, folder, protected=case.source_paths, details=details)

    def save_picture(self, path: str | Path) -> Path:
        """Save a PNG of the current view (the canvas) at ``path``."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"{path.name} is not a .png name; save the picture as .png.")
        if self.last is not None and path.resolve() in {Path(p).resolve() for p in self.last.case.source_paths}:
            raise ValueError(f"Refusing to overwrite {path}: the case was loaded from it.")
        self.viewer.screenshot(str(path), canvas_only=True)
        return path

    def _choose_export_folder(self) -> None:
        """Ask for a folder and save the relevance maps there."""
        folder = QFileDialog.getExistingDirectory(self, "Save relevance maps into")
        if not folder:
            return
        try:
            written = self.export_relevance(folder)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        show_info(f"Saved {len(written) - 1} relevance maps and {Path(written['__json__']).name} in {folder}.")

    def _choose_picture_path(self) -> None:
        """Ask for a file name and save a PNG of the current view."""
        path, _ = QFileDialog.getSaveFileName(self, "Save the view as", "", "PNG images (*.png)")
        if not path:
            return
        if not path.lower().endswith(".png"):
            path += ".png"
        try:
            self.save_picture(path)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        show_info(f"Saved the view as {path}.")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running explanation and stop listening to clicks when the widget closes."""
        self.cancel()
        self._adding = None
        if self._on_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_click)
        super().closeEvent(event)
