"""The "RoI importance" dock widget: bars of how much relevance falls in each region and modality (Agg2Exp).

Each relevance result the Explain widget adds (its layers carry the Relevance in ``Key.RESULT``)
is summarised with :func:`core.roi.roi_importance` over regions from the case's segmentation
layer (and an optional atlas labels layer). Clicking a region's bar shows that region as a
labels layer named ``RoI: <region>`` (its outline, so the relevance inside stays visible) and moves the slices to where the region is largest;
clicking the bar again removes it. Clicking a modality's bar selects that relevance layer.
It has no case or card of its own: it follows the relevance layers, and Recompute is its Run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QBoxLayout, QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QPushButton, QTabBar, QWidget

from .._layers import Key, Role, layer_role, world_units
from .compute_widget import ComputeWidget
from .jobs import Outcome
from .roi_bars import RoiBars
from .roi_summary import NO_ATLAS, RoiEntry, RoiRequest, read_request, summarise

if TYPE_CHECKING:
    import napari

VIEWS = ("Regions", "Modalities")
HIGHLIGHT_ROLE = Role.ROI_HIGHLIGHT   # the role of a region shown from the chart
HIGHLIGHT_COLOR = "#00e5ff"


def highlight_name(region: str) -> str:
    """The name of the labels layer that shows one region."""
    return f"RoI: {region}"


class RoiWidget(ComputeWidget):
    """Grouped bars per explained class: e_{b->a} per region, or the share of each modality."""

    noun = "RoI importance"
    memory_hint = "close other results or explain fewer classes"
    run_text = "Recompute"
    has_case = has_card = has_device = False

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.entries: list[RoiEntry] = []
        self._pending: dict[int, Any] = {}                     # id(result) -> an image layer of it
        self.run_button.setToolTip("Summarise the shown result again with the current segmentation and atlas layers.")
        self.status.setText("Run Explain: each relevance result appears here.")
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in viewer.layers:
            self._note_result(layer)
        self._refresh_atlas_choices()
        self._start_pending()
        self.redraw()

    def add_controls(self, form: QFormLayout) -> None:
        """The result shown, the atlas and the signed split."""
        self.result_choice = QComboBox()
        self.result_choice.setToolTip("The relevance result shown: case, method and explained classes.")
        self.result_choice.currentIndexChanged.connect(lambda *_: self.redraw())
        self.atlas_choice = QComboBox()
        self.atlas_choice.setToolTip("A labels layer of atlas regions on the case grid; each label becomes a region.")
        self.atlas_choice.activated.connect(lambda *_: self.recompute())
        self.signed = QCheckBox("signed split")
        self.signed.setToolTip("Stack the positive (solid) and negative (hatched) relevance of each bar.")
        self.signed.toggled.connect(lambda *_: self.redraw())
        form.addRow("Result", self.result_choice)
        form.addRow("Atlas", self.atlas_choice)
        form.addRow("", self.signed)

    def add_results(self, layout: QBoxLayout) -> None:
        """The view tabs, the chart and its export buttons."""
        self.view = QTabBar()
        for name in VIEWS:
            self.view.addTab(name)
        self.view.setToolTip("Regions: e_{b->a}, the share of |relevance| for class a inside region b. "
                             "Modalities: the share of |relevance| in each input channel.")
        self.view.currentChanged.connect(lambda *_: self.redraw())
        self.chart = RoiBars(self.viewer)
        self.chart.said.connect(self.status.setText)
        self.chart.clicked.connect(self._on_bar_clicked)
        self.canvas, self.figure = self.chart.canvas, self.chart.figure
        self.save_png, self.png_bytes = self.chart.save_png, self.chart.png_bytes
        self.save_csv_button = QPushButton("Save CSV…")
        self.save_csv_button.setToolTip("The table of the shown result: one row per class and region or modality.")
        self.save_csv_button.clicked.connect(self._choose_csv_path)
        self.save_png_button = QPushButton("Save PNG…")
        self.save_png_button.setToolTip("A PNG of the chart as shown.")
        self.save_png_button.clicked.connect(self._choose_png_path)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Put the table (as CSV text) and the chart (as a picture) on the clipboard, "
                                    "to paste into a spreadsheet, a slide or a message.")
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.save_csv_button)
        buttons.addWidget(self.save_png_button)
        layout.addWidget(self.view)
        layout.addWidget(self.chart, 1)
        layout.addLayout(buttons)

    # ------------------------------------------------------------------ results from the viewer

    def current(self) -> Optional[RoiEntry]:
        """The entry shown, if any."""
        index = self.result_choice.currentIndex()
        return self.entries[index] if 0 <= index < len(self.entries) else None

    def _on_inserted(self, event: Any) -> None:
        """A new relevance result is summarised once all its layers are in (next turn of the event loop)."""
        self._refresh_atlas_choices()
        if self._note_result(event.value):
            QTimer.singleShot(0, self._start_pending)

    def _note_result(self, layer) -> bool:
        """Remember a relevance layer's result when it is new; True if it is."""
        result = (getattr(layer, "metadata", None) or {}).get(Key.RESULT)
        if result is None or not isinstance(layer, Image):
            return False
        known = {id(entry.result) for entry in self.entries}
        if id(result) in known or id(result) in self._pending:
            return False
        self._pending[id(result)] = layer
        return True

    def _start_pending(self) -> None:
        """Summarise the results waiting (one job for all of them)."""
        if not self._pending or self.jobs.running:
            return
        layers = list(self._pending.values())
        self._pending.clear()
        try:
            requests = [self._request(layer.metadata[Key.RESULT], layer) for layer in layers]
        except ValueError as err:
            show_error(str(err))
            return
        self.start(None, None, {"requests": requests})

    def run(self) -> None:
        """Summarise the shown result again (new segmentation or atlas); nothing to do before a result."""
        if self.current() is not None:
            super().run()

    recompute = run

    def job_options(self, case, card) -> dict:
        """The shown result, read again from the layers (ValueError when its layers were removed)."""
        entry = self.current()
        layer = next((layer for layer in self.viewer.layers
                      if (layer.metadata or {}).get(Key.RESULT) is entry.result), None)
        if layer is None:
            raise ValueError("The layers of this result were removed; run Explain again.")
        return {"requests": [self._request(entry.result, layer)]}

    def job_description(self, case, card, options: dict) -> str:
        """RoI importance of <the results' cases>."""
        return f"RoI importance of {', '.join(dict.fromkeys(r.case_name for r in options['requests']))}"

    @staticmethod
    def compute(case, card, *, requests, progress=None, should_cancel=None) -> list[RoiEntry]:
        """:func:`summarise` each request (worker thread), progress counted over all of them."""
        entries = []
        for n, request in enumerate(requests):
            def part(done, total, n=n):
                if progress is not None:
                    progress(n * total + done, len(requests) * total)
            entries.append(summarise(request, progress=part, should_cancel=should_cancel))
        return entries

    def show_outcome(self, outcome: Outcome) -> None:
        """Show the new entries (a recomputed one replaces its old entry), then any result that arrived meanwhile."""
        alive = self._results_in_viewer()
        shown = None
        for entry in outcome.result:
            if id(entry.result) not in alive:
                continue      # its layers were removed while it was summarised
            index = next((i for i, old in enumerate(self.entries) if old.result is entry.result), None)
            if index is None:
                self.entries.append(entry)
                index = len(self.entries) - 1
            else:
                self.entries[index] = entry
            shown = index
        self._list_entries(shown)
        entry = self.current()
        if shown is not None and entry is not None:
            self.status.setText(f"Regions from {entry.region_source}"
                                + (f" and atlas {entry.atlas}" if entry.atlas != NO_ATLAS else "")
                                + f". Target: {entry.importance.target}.")
        self.redraw()
        self._start_pending()

    def _results_in_viewer(self) -> set[int]:
        """Ids of the relevance results that still have a layer in the viewer."""
        return {id(result) for layer in self.viewer.layers
                if (result := (layer.metadata or {}).get(Key.RESULT)) is not None}

    def _list_entries(self, index: Optional[int]) -> None:
        """Refill the result list and show entry ``index`` (else keep the shown one, else the newest)."""
        current = self.current()
        self.result_choice.blockSignals(True)
        self.result_choice.clear()
        self.result_choice.addItems([entry.title for entry in self.entries])
        if index is None:
            index = next((i for i, e in enumerate(self.entries) if e is current), len(self.entries) - 1)
        self.result_choice.setCurrentIndex(index)
        self.result_choice.blockSignals(False)

    def _on_removed(self, event: Any = None) -> None:
        """Forget results whose layers are all gone (they hold the full relevance in memory)."""
        self._refresh_atlas_choices()
        alive = self._results_in_viewer()
        kept = [entry for entry in self.entries if id(entry.result) in alive]
        self._pending = {key: layer for key, layer in self._pending.items() if key in alive}
        if len(kept) != len(self.entries):
            shown = self.current()
            self.entries = kept
            self._list_entries(next((i for i, e in enumerate(kept) if e is shown), None))
            self.redraw()

    def _request(self, result, layer) -> RoiRequest:
        """What summarising ``result`` needs, read from the viewer's layers with the chosen atlas."""
        return read_request(self.viewer, result, layer, self.atlas_choice.currentText() or NO_ATLAS)

    def _refresh_atlas_choices(self, *_: Any) -> None:
        """List the labels layers that can serve as an atlas (not segmentations or highlights)."""
        current = self.atlas_choice.currentText()
        names = [NO_ATLAS] + [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)
                              and (layer.metadata or {}).get(Key.ROLE) not in (Role.SEGMENTATION, Role.ROI_HIGHLIGHT)]
        self.atlas_choice.blockSignals(True)
        self.atlas_choice.clear()
        self.atlas_choice.addItems(names)
        self.atlas_choice.setCurrentText(current if current in names else NO_ATLAS)
        self.atlas_choice.blockSignals(False)

    # ------------------------------------------------------------------ chart

    @property
    def bars(self) -> list:
        """The drawn bars: (patch, view, class index, item index, part)."""
        return self.chart.bars

    @property
    def mpl_style(self) -> dict:
        """The chart's matplotlib style (the napari theme's colours)."""
        return self.chart.mpl_style

    def showing_modalities(self) -> bool:
        """Whether the modality view is shown."""
        return self.view.currentIndex() == VIEWS.index("Modalities")

    def redraw(self) -> None:
        """Draw the shown entry in the chosen view."""
        self.chart.plot(self.current(), modalities=self.showing_modalities(), signed=self.signed.isChecked())

    def bar_value(self, patch) -> str:
        """What a bar says, in words."""
        return self.chart.bar_value(patch)

    def _on_bar_clicked(self, view: str, k: int, i: int) -> None:
        """Clicking a region's bar shows the region; a modality's bar selects that relevance layer."""
        entry = self.current()
        if view == "region":
            self.highlight(entry.importance.region_names[i])
        else:
            self.select_relevance(entry.importance.class_names[k], entry.importance.modality_names[i])

    # ------------------------------------------------------------------ viewer

    def highlight(self, region: str) -> Optional[Labels]:
        """Show one region of the shown result as a labels layer (replacing the last one); again: remove it."""
        entry = self.current()
        if entry is None or region not in entry.regions:
            return None
        name = highlight_name(region)
        shown = [layer for layer in self.viewer.layers if layer_role(layer) == Role.ROI_HIGHLIGHT]
        again = any(layer.name == name and layer.metadata.get(Key.RESULT_ID) == id(entry.result)
                    for layer in shown)
        for layer in shown:
            self.viewer.layers.remove(layer)
        if again:
            self.status.setText(f"Removed the layer {name!r}.")
            return None
        from napari.utils.colormaps import DirectLabelColormap

        mask = entry.regions[region]
        layer = self.viewer.add_labels(
            mask.astype(np.uint8), name=name, affine=entry.affine, units=world_units(mask.ndim), opacity=1.0,
            blending="translucent",
            colormap=DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: HIGHLIGHT_COLOR}),
            metadata={Key.ROLE: Role.ROI_HIGHLIGHT, Key.CASE: entry.case_name, Key.REGION: region,
                      Key.RESULT_ID: id(entry.result)},
        )
        layer.contour = 1
        if mask.any():
            voxel = [int(np.argmax(mask.sum(axis=tuple(a for a in range(mask.ndim) if a != axis))))
                     for axis in range(mask.ndim)]
            world = (entry.affine @ np.append(voxel, 1.0))[: mask.ndim]
            self.viewer.dims.set_point(tuple(range(mask.ndim)), tuple(float(v) for v in world))
            self.status.setText(f"Showing {name!r}: {int(mask.sum())} voxels; slices moved to where it is largest.")
        else:
            self.status.setText(f"The region {region!r} is empty in this case.")
        return layer

    def select_relevance(self, class_name: str, modality: str) -> Optional[Image]:
        """Make the relevance layer of one class and modality of the shown result visible and selected."""
        entry = self.current()
        for layer in self.viewer.layers:
            meta = layer.metadata or {}
            if (meta.get(Key.RESULT) is entry.result and meta.get(Key.CLASS) == class_name
                    and meta.get(Key.MODALITY) == modality):
                layer.visible = True
                self.viewer.layers.selection.active = layer
                self.status.setText(f"Selected the layer {layer.name!r}.")
                return layer
        self.status.setText(f"The relevance layer of {class_name} and {modality} was removed.")
        return None

    # ------------------------------------------------------------------ export

    def save_csv(self, path: str | Path) -> Path:
        """Write the shown result's table as CSV."""
        entry = self.current()
        if entry is None:
            raise ValueError("There is no RoI importance to save yet; run Explain first.")
        path = Path(path)
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path.name} is not a .csv name; save the table as .csv.")
        return entry.importance.to_csv(path)

    def copy_to_clipboard(self) -> None:
        """Put the shown result's table (CSV text) and the chart (a picture) on the clipboard."""
        from qtpy.QtCore import QMimeData
        from qtpy.QtGui import QImage
        from qtpy.QtWidgets import QApplication

        entry = self.current()
        if entry is None:
            show_error("There is no RoI importance to copy yet; run Explain first.")
            return
        data = QMimeData()
        data.setText(entry.importance.csv_text())
        data.setImageData(QImage.fromData(self.png_bytes(), "PNG"))
        QApplication.clipboard().setMimeData(data)
        self.status.setText("Copied the table (CSV text) and the chart (picture) to the clipboard.")

    def _choose_csv_path(self) -> None:
        """Ask for a file name and save the table."""
        self._save_with_dialog("Save the RoI importance table as", "CSV tables (*.csv)", ".csv", self.save_csv)

    def _choose_png_path(self) -> None:
        """Ask for a file name and save the chart."""
        self._save_with_dialog("Save the chart as", "PNG images (*.png)", ".png", self.save_png)

    def _save_with_dialog(self, title: str, pattern: str, suffix: str, save) -> None:
        """A save dialog, then ``save(path)``; problems become notifications."""
        path, _ = QFileDialog.getSaveFileName(self, title, "", pattern)
        if not path:
            return
        if not path.lower().endswith(suffix):
            path += suffix
        try:
            save(path)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        show_info(f"Saved {path}.")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running job and stop listening to the viewer."""
        self.viewer.layers.events.inserted.disconnect(self._on_inserted)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        self.chart.close()
        super().closeEvent(event)
