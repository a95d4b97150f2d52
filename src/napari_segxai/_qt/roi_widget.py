"""The "RoI importance" dock widget: bars of how much relevance falls in each region and modality (Agg2Exp).

Each relevance result the Explain widget adds (its layers carry the Relevance in ``segxai_result``)
is summarised with :func:`core.roi.roi_importance` over regions from the case's segmentation
layer (and an optional atlas labels layer). Clicking a region's bar shows that region as a
labels layer named ``RoI: <region>`` (its outline, so the relevance inside stays visible) and moves the slices to where the region is largest;
clicking the bar again removes it. Clicking a modality's bar selects that relevance layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTabBar,
    QWidget,
)

from .._layers import CLASS_PALETTE, world_units
from ..core import progress as _progress
from ..core.roi import RoiImportance, case_regions, roi_importance
from ..core.roi_chart import FIXED_COLORS, draw_roi_bars, legend_entries
from .jobs import JobRunner, Outcome
from .mpl_canvas import MplCanvasWidget

if TYPE_CHECKING:
    import napari

VIEWS = ("Regions", "Modalities")
NO_ATLAS = "none"
HIGHLIGHT_ROLE = "roi highlight"
HIGHLIGHT_COLOR = "#00e5ff"


def highlight_name(region: str) -> str:
    """The name of the labels layer that shows one region."""
    return f"RoI: {region}"


@dataclass
class RoiEntry:
    """One relevance result summarised: its RoI importance, the region masks and where they came from."""

    result: Any                      # the core Relevance
    case_name: str
    importance: RoiImportance
    regions: dict[str, np.ndarray]
    affine: np.ndarray
    colors: dict[str, str]
    region_source: str
    atlas: str = NO_ATLAS

    @property
    def title(self) -> str:
        """How the result is listed: case, method and explained classes."""
        return f"{self.case_name} · {self.importance.method} · {', '.join(self.importance.class_names)}"


@dataclass(frozen=True)
class RoiRequest:
    """What a worker needs to summarise one result: arrays read from the layers on the main thread."""

    result: Any
    case_name: str
    affine: np.ndarray
    labels: np.ndarray
    classes: tuple                   # ClassInfo of the labels' classes
    colors: dict[str, str]
    images: tuple = ()               # the case's image volumes (the brain is where any is non-zero)
    atlas: Optional[np.ndarray] = None
    atlas_names: dict = field(default_factory=dict)
    atlas_layer: str = NO_ATLAS
    region_source: str = ""


def summarise(request: RoiRequest, progress=None, should_cancel=None) -> RoiEntry:
    """Regions from the request's labels (and atlas), then RoI importance of its result (worker thread)."""
    from ..core.model_card import ClassInfo

    present = set(np.unique(request.labels).tolist()) - {0} - {int(c.label) for c in request.classes}
    classes = list(request.classes) + [ClassInfo(f"label {v}", int(v), "") for v in sorted(present)]
    brain = reduce(np.logical_or, (np.asarray(image) != 0 for image in request.images)) if request.images else None
    _progress.step(0, 1, None, should_cancel)
    regions = case_regions(request.labels, classes, brain=brain, atlas=request.atlas,
                           atlas_names=request.atlas_names or None)
    importance = roi_importance(request.result, regions, progress=progress, should_cancel=should_cancel)
    colors = dict(FIXED_COLORS)
    for rank, name in enumerate(regions):
        colors.setdefault(name, request.colors.get(name) or CLASS_PALETTE[(rank + 3) % len(CLASS_PALETTE)])
    return RoiEntry(request.result, request.case_name, importance, regions, request.affine, colors,
                    request.region_source, request.atlas_layer)


class RoiWidget(MplCanvasWidget):
    """Grouped bars per explained class: e_{b->a} per region, or the share of each modality."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.entries: list[RoiEntry] = []
        self.bars: list[tuple[Any, str, int, int, str]] = []   # (patch, view, class index, item index, part)
        self._pending: dict[int, Any] = {}                     # id(result) -> an image layer of it
        self._hovered = None

        self.result_choice = QComboBox()
        self.result_choice.setToolTip("The relevance result shown: case, method and explained classes.")
        self.result_choice.currentIndexChanged.connect(lambda *_: self.redraw())
        self.atlas_choice = QComboBox()
        self.atlas_choice.setToolTip("A labels layer of atlas regions on the case grid; each label becomes a region.")
        self.atlas_choice.activated.connect(lambda *_: self.recompute())
        self.view = QTabBar()
        for name in VIEWS:
            self.view.addTab(name)
        self.view.setToolTip("Regions: e_{b->a}, the share of |relevance| for class a inside region b. "
                             "Modalities: the share of |relevance| in each input channel.")
        self.view.currentChanged.connect(lambda *_: self.redraw())
        self.signed = QCheckBox("signed split")
        self.signed.setToolTip("Stack the positive (solid) and negative (hatched) relevance of each bar.")
        self.signed.toggled.connect(lambda *_: self.redraw())
        self.refresh_button = QPushButton("Recompute")
        self.refresh_button.setToolTip("Summarise the shown result again with the current segmentation and atlas layers.")
        self.refresh_button.clicked.connect(self.recompute)
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
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Run Explain: each relevance result appears here.")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self, self.progress_bar, self.status, self.cancel_button, noun="RoI importance")

        form = QFormLayout()
        form.addRow("Result", self.result_choice)
        form.addRow("Atlas", self.atlas_choice)
        options = QHBoxLayout()
        options.addWidget(self.signed)
        options.addWidget(self.refresh_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.save_csv_button)
        buttons.addWidget(self.save_png_button)
        jobs = QHBoxLayout()
        jobs.addWidget(self.progress_bar)
        jobs.addWidget(self.cancel_button)
        layout = self.canvas_layout
        layout.insertLayout(0, form)
        layout.insertWidget(1, self.view)
        layout.addLayout(options)
        layout.addLayout(buttons)
        layout.addLayout(jobs)
        layout.addWidget(self.status)

        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        for layer in viewer.layers:
            self._note_result(layer)
        self._refresh_atlas_choices()
        self._start_pending()
        self.redraw()

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
        result = (getattr(layer, "metadata", None) or {}).get("segxai_result")
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
            requests = [self._request(layer.metadata["segxai_result"], layer) for layer in layers]
        except ValueError as err:
            show_error(str(err))
            return
        self._start(requests)

    def recompute(self) -> None:
        """Summarise the shown result again (new segmentation or atlas)."""
        entry = self.current()
        if entry is None or self.jobs.refuse_if_running():
            return
        layer = next((layer for layer in self.viewer.layers
                      if (layer.metadata or {}).get("segxai_result") is entry.result), None)
        if layer is None:
            show_error("The layers of this result were removed; run Explain again.")
            return
        try:
            request = self._request(entry.result, layer)
        except ValueError as err:
            show_error(str(err))
            return
        self._start([request])

    def _start(self, requests: list[RoiRequest]) -> None:
        """Run :func:`summarise` for the requests in a worker; their entries are shown on return."""
        def compute(progress=None, should_cancel=None):
            entries = []
            for n, request in enumerate(requests):
                def part(done, total, n=n):
                    if progress is not None:
                        progress(n * total + done, len(requests) * total)
                entries.append(summarise(request, progress=part, should_cancel=should_cancel))
            return entries

        names = ", ".join(dict.fromkeys(r.case_name for r in requests))
        self.jobs.start(compute, SimpleNamespace(name=names), None, verb="Summarising relevance of",
                        memory_hint="close other results or explain fewer classes",
                        description=f"RoI importance of {names}", on_result=self._on_result)

    def _on_result(self, outcome: Outcome) -> None:
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
                if (result := (layer.metadata or {}).get("segxai_result")) is not None}

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
        """Read the labels, images and atlas a result is summarised over from the viewer's layers."""
        meta = layer.metadata or {}
        case_name = str(meta.get("segxai_case") or layer.name)
        spatial = tuple(result.relevance.shape[2:])
        affine = np.asarray(result.affine if result.affine is not None else meta.get("affine", np.eye(len(spatial) + 1)),
                            dtype=float)
        images = tuple(np.asarray(other.data) for other in self.viewer.layers
                       if isinstance(other, Image) and not other.rgb and tuple(other.data.shape) == spatial
                       and (other.metadata or {}).get("segxai_role") == "image"
                       and (other.metadata or {}).get("segxai_case") == case_name)
        segmentation = self._segmentation_layer(case_name, spatial)
        if segmentation is not None:
            classes, colors = _layer_classes(segmentation)
            labels = np.asarray(segmentation.data)
            source = f"the segmentation layer {segmentation.name!r}"
        else:
            labels, classes, colors = _target_labels(result)
            source = "the explained target regions (no segmentation layer of this case)"
        atlas_name = self.atlas_choice.currentText() or NO_ATLAS
        atlas, atlas_names = None, {}
        if atlas_name != NO_ATLAS and atlas_name in self.viewer.layers:
            atlas_layer = self.viewer.layers[atlas_name]
            if tuple(atlas_layer.data.shape) != spatial:
                raise ValueError(f"The atlas layer {atlas_name!r} has shape {tuple(atlas_layer.data.shape)}, not the "
                                 f"case's {spatial}; choose an atlas on the case grid or none.")
            atlas, atlas_names = np.asarray(atlas_layer.data), _layer_names(atlas_layer)
        return RoiRequest(result, case_name, affine, labels, classes, colors, images, atlas, atlas_names,
                          atlas_name if atlas is not None else NO_ATLAS, source)

    def _segmentation_layer(self, case_name: str, spatial: tuple) -> Optional[Labels]:
        """The case's latest segmentation layer on the result's grid."""
        for layer in reversed(list(self.viewer.layers)):
            meta = layer.metadata or {}
            if (isinstance(layer, Labels) and meta.get("segxai_role") == "segmentation"
                    and meta.get("segxai_case") == case_name and tuple(layer.data.shape) == spatial):
                return layer
        return None

    def _refresh_atlas_choices(self, *_: Any) -> None:
        """List the labels layers that can serve as an atlas (not segmentations or highlights)."""
        current = self.atlas_choice.currentText()
        names = [NO_ATLAS] + [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)
                              and (layer.metadata or {}).get("segxai_role") not in ("segmentation", HIGHLIGHT_ROLE)]
        self.atlas_choice.blockSignals(True)
        self.atlas_choice.clear()
        self.atlas_choice.addItems(names)
        self.atlas_choice.setCurrentText(current if current in names else NO_ATLAS)
        self.atlas_choice.blockSignals(False)

    # ------------------------------------------------------------------ chart

    def showing_modalities(self) -> bool:
        """Whether the modality view is shown."""
        return self.view.currentIndex() == VIEWS.index("Modalities")

    def draw(self) -> None:
        """Grouped bars: one group per explained class, one bar per region (or modality)."""
        self.bars = []
        self._hovered = None
        axes = self.figure.add_subplot()
        entry = self.current()
        if entry is None:
            axes.set_axis_off()
            axes.text(0.5, 0.5, "No relevance result yet.\nRun Explain; its result appears here.",
                      ha="center", va="center", transform=axes.transAxes)
            return
        table = entry.importance
        view = "modality" if self.showing_modalities() else "region"
        positive = table.modality_positive if view == "modality" else table.positive
        signed = self.signed.isChecked() and positive is not None
        edge = self.mpl_style["axes.edgecolor"]
        self.bars = draw_roi_bars(axes, table, view=view, signed=signed, region_colors=entry.colors, edge=edge,
                                  title=f"{entry.case_name} · {table.method}")
        handles, labels = legend_entries(axes, signed=signed, edge=edge)
        if handles:
            self.figure.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize=7,
                               frameon=False)

    def bar_value(self, patch) -> str:
        """What a bar says, in words."""
        for candidate, view, k, i, part in self.bars:
            if candidate is patch:
                entry = self.current()
                table = entry.importance
                name = (table.modality_names if view == "modality" else table.region_names)[i]
                if view == "modality":
                    total = table.modality_share[k, i]
                    split = (None if table.modality_positive is None
                             else (table.modality_positive[k, i], table.modality_negative[k, i]))
                    where = f"modality {name}"
                else:
                    total, split = table.importance[k, i], (table.positive[k, i], table.negative[k, i])
                    where = f"region {name} ({table.region_voxels[i]} voxels)"
                text = f"{table.class_names[k]}: {total:.1%} of |relevance| in {where}"
                if split is not None:
                    text += f" (+{split[0]:.1%}, −{split[1]:.1%})"
                return text
        return ""

    def _bar_at(self, event) -> Optional[tuple]:
        """The bar under a mouse event, if any."""
        if event.inaxes is None:
            return None
        for bar in self.bars:
            if bar[0].contains(event)[0]:
                return bar
        return None

    def _on_motion(self, event) -> None:
        """Outline the bar under the mouse and say its value."""
        bar = self._bar_at(event)
        patch = None if bar is None else bar[0]
        if patch is self._hovered:
            return
        if self._hovered is not None:
            self._hovered.set_linewidth(0.4)
        if patch is not None:
            patch.set_linewidth(2.0)
            self.status.setText(self.bar_value(patch) + (" — click to show it" if bar[1] == "region" else
                                                         " — click to select its layer"))
        self._hovered = patch
        self.canvas.draw_idle()

    def _on_press(self, event) -> None:
        """Clicking a region's bar shows the region; a modality's bar selects that relevance layer."""
        bar = self._bar_at(event)
        if bar is None:
            return
        _, view, k, i, _ = bar
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
        shown = [layer for layer in self.viewer.layers if (layer.metadata or {}).get("segxai_role") == HIGHLIGHT_ROLE]
        again = any(layer.name == name and layer.metadata.get("segxai_result_id") == id(entry.result)
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
            metadata={"segxai_role": HIGHLIGHT_ROLE, "segxai_case": entry.case_name, "segxai_region": region,
                      "segxai_result_id": id(entry.result)},
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
            if (meta.get("segxai_result") is entry.result and meta.get("segxai_class") == class_name
                    and meta.get("segxai_modality") == modality):
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
        self.jobs.cancel()
        self.viewer.layers.events.inserted.disconnect(self._on_inserted)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        super().closeEvent(event)


def _layer_classes(layer: Labels) -> tuple[tuple, dict[str, str]]:
    """ClassInfo per label value named in a labels layer's features (index, class), with its colour."""
    from matplotlib.colors import to_hex

    from ..core.model_card import ClassInfo

    names = _layer_names(layer)
    classes, colors = [], {}
    for value, name in sorted(names.items()):
        color = layer.get_color(value) if value != 0 else None
        hex_color = to_hex(color, keep_alpha=False) if color is not None else ""
        classes.append(ClassInfo(name, int(value), hex_color))
        if value != 0:
            colors[name] = hex_color
    return tuple(classes), colors


def _layer_names(layer: Labels) -> dict[int, str]:
    """Label value -> name from a labels layer's features (columns index and class or name), else empty."""
    features = getattr(layer, "features", None)
    if features is None or "index" not in features:
        return {}
    column = "class" if "class" in features else "name" if "name" in features else None
    if column is None:
        return {}
    return {int(v): str(n) for v, n in zip(features["index"], features[column])}


def _target_labels(result) -> tuple[np.ndarray, tuple, dict[str, str]]:
    """Labels 1..K_t from the explained target regions (a later class wins where they overlap)."""
    from ..core.model_card import ClassInfo

    masks = np.asarray(result.target.masks)
    labels = np.zeros(masks.shape[1:], dtype=np.int16)
    classes = [ClassInfo("background", 0, "")]
    for k, (name, mask) in enumerate(zip(result.class_names, masks), start=1):
        labels[mask] = k
        classes.append(ClassInfo(name, k, ""))
    colors = {name: CLASS_PALETTE[k % len(CLASS_PALETTE)] for k, name in enumerate(result.class_names)}
    return labels, tuple(classes), colors
