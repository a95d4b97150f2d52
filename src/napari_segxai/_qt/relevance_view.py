"""The Explain widget's "Display and export" box: colour scale, opacity, grid view and files of the last explanation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout,
                            QPushButton, QSlider)

from .._layers import Key, Role, layer_case, layer_role
from .controls import check_quietly
from .explain_display import DEFAULT_OPACITY, DEFAULT_PERCENTILE, DEFAULT_THRESHOLD, head_mask, relevance_limits, shown_maps
from .jobs import Outcome


class RelevanceView(QGroupBox):
    """Restyles, lays out and saves the relevance layers of one explanation (``outcome``, set once they are all added)."""

    def __init__(self, viewer, parent=None):
        super().__init__("Display and export", parent)
        self.viewer = viewer
        self.outcome: Optional[Outcome] = None   # the explanation whose layers are shown
        self.magnitudes: list = []               # per explained class: sorted |relevance| for percentiles
        self._grid_saved: Optional[dict] = None

        self.percentile = QDoubleSpinBox()
        self.percentile.setRange(50.0, 100.0)
        self.percentile.setDecimals(1)
        self.percentile.setSingleStep(0.5)
        self.percentile.setValue(DEFAULT_PERCENTILE)
        self.percentile.setToolTip("Colour scale ends at this percentile of |relevance| (per class, all modalities).")
        self.percentile.valueChanged.connect(self.restyle)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(DEFAULT_OPACITY * 100))
        self.opacity.valueChanged.connect(self.restyle)
        self.whole = QCheckBox("Whole maps")
        self.whole.setToolTip(f"Show the maps everywhere, at every value; by default they are shown inside the head and "
                              f"above the {DEFAULT_THRESHOLD:.0f}th percentile of |relevance| there.")
        self.whole.toggled.connect(self.reshow)
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

        form = QFormLayout(self)
        form.addRow("Percentile", self.percentile)
        form.addRow("Opacity", self.opacity)
        form.addRow("", self.whole)
        grid_row = QHBoxLayout()
        grid_row.addWidget(self.grid_class)
        grid_row.addWidget(self.grid_button)
        form.addRow("Grid", grid_row)
        export_row = QHBoxLayout()
        export_row.addWidget(self.save_maps_button)
        export_row.addWidget(self.save_picture_button)
        form.addRow(export_row)

    def set_outcome(self, outcome: Optional[Outcome], magnitudes: list = (), shown_class: str = "") -> None:
        """Take the explanation whose layers are in the viewer (None while they are being replaced); the grid
        offers ``shown_class`` (the class of the layer shown first) first."""
        if outcome is None and self.grid_button.isChecked():
            self.grid_button.setChecked(False)
        self.outcome, self.magnitudes = outcome, list(magnitudes)
        self.grid_class.clear()
        if outcome is not None:
            self.grid_class.addItems(list(outcome.result.class_names))
            if shown_class in outcome.result.class_names:
                self.grid_class.setCurrentText(shown_class)
            self._outline_segmentation()
            self._legend()
            if self.whole.isChecked():
                self.reshow()

    def _outline_segmentation(self) -> None:
        """Draw the case's segmentation as outlines, so the relevance over it stays visible."""
        for layer in self.viewer.layers:
            if layer_role(layer) == Role.SEGMENTATION and layer.metadata.get(Key.CASE) == self.outcome.case.name:
                layer.contour = 1

    def _legend(self) -> None:
        """Say on the canvas what the colours mean."""
        result = self.outcome.result
        overlay = self.viewer.text_overlay
        overlay.text = (f"{result.method}: red for the class, blue against" if result.signed
                        else f"{result.method}: brighter = more relevant")
        overlay.color = "white"
        overlay.font_size = 9
        overlay.position = "top_center"  # stacked with the orientation letter there (_orientation), never across it
        overlay.gridded = True  # like the letters: in grid view, in every view rather than across the gaps
        overlay.visible = True

    def reshow(self, *_: Any) -> None:
        """Show the maps inside the head above the threshold, or whole (the Whole maps box)."""
        if self.outcome is None:
            return
        result, whole = self.outcome.result, self.whole.isChecked()
        head = None if whole else head_mask(self.outcome.case)
        for k, class_name in enumerate(result.class_names):
            maps = shown_maps(result.relevance[k], head, 0.0 if whole else DEFAULT_THRESHOLD)
            for layer in self.relevance_layers(class_name):
                layer.data = maps[list(result.channel_names).index(layer.metadata.get(Key.MODALITY))]

    def relevance_layers(self, class_name: Optional[str] = None) -> list[Image]:
        """The layers of the explanation (of one class when named), in modality order."""
        if self.outcome is None:
            return []
        result = self.outcome.result
        return [layer for layer in self.viewer.layers
                if layer_role(layer) == Role.RELEVANCE and layer.metadata.get(Key.CASE) == self.outcome.case.name
                and layer.metadata.get(Key.METHOD) == result.method
                and (class_name is None or layer.metadata.get(Key.CLASS) == class_name)]

    def restyle(self, *_: Any) -> None:
        """Apply the percentile and opacity controls to the explanation's layers."""
        if self.outcome is None:
            return
        result = self.outcome.result
        for k, class_name in enumerate(result.class_names):
            limits = relevance_limits(result.relevance[k], self.percentile.value(), result.signed,
                                      sorted_magnitudes=self.magnitudes[k])
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
            check_quietly(self.grid_button, False)
            return
        maps = self.relevance_layers(self.grid_class.currentText())
        if not maps:
            show_warning("Run an explanation first; the grid shows its maps beside the images.")
            check_quietly(self.grid_button, False)
            return
        images = {layer.metadata.get(Key.MODALITY) or layer.name: layer for layer in self.viewer.layers
                  if isinstance(layer, Image) and layer_role(layer) == Role.IMAGE
                  and layer_case(layer) == self.outcome.case.name}
        cells = []
        for relevance in maps:
            image = images.get(relevance.metadata.get(Key.MODALITY))
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
        check_quietly(self.grid_button, True)

    def _reset_view_soon(self) -> None:
        """Fit the view now and again once the canvas has rebuilt its grid of views."""
        self.viewer.reset_view()
        QTimer.singleShot(0, self.viewer.reset_view)

    def export_relevance(self, folder: str | Path) -> dict[str, str]:
        """Write the explanation as NIfTI (one per class, channels = modalities) and JSON into ``folder``."""
        from ..core.io.relevance import write_relevance

        if self.outcome is None:
            raise ValueError("There is no explanation to save yet; press Run first.")
        case, card, result = self.outcome.case, self.outcome.card, self.outcome.result
        details = {"model_card": str(card.path), "model": card.name,
                   "class_labels": [card.classes[i].label for i in result.class_indices]}
        return write_relevance(result, case.name, folder, protected=case.source_paths, details=details)

    def save_picture(self, path: str | Path) -> Path:
        """Save a PNG of the current view (the canvas) at ``path``."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"{path.name} is not a .png name; save the picture as .png.")
        if self.outcome is not None and path.resolve() in {Path(p).resolve() for p in self.outcome.case.source_paths}:
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
