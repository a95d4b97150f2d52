"""The "Trust" dock widget: does a method's relevance map of the case deserve trust? Sanity check and quality metrics.

For the chosen case, model card and attribution method, one background job runs
``core.trust.assess_case`` as ``segxai trust`` does (each class's logits summed over its predicted
region, or over the painted region or clicked point of the docked Explain widget's target, on a
crop around it): cascading model-parameter randomisation and the quality metrics. The widget shows one column of ``quality_rows`` numbers per class and the
cascading-randomisation plot. The cost settings (the Cost box) start lower than the
``segxai trust`` defaults.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .._layers import case_from_layers
from .explain_parameters import ParameterForm
from .card_choice import CardChoice
from .jobs import JobRunner, Outcome
from .mpl_canvas import MplCanvasWidget

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_METHOD = "saliency"
# (shown text, kind): what the checked maps explain
TARGETS = (("each class's predicted region", "predicted"), ("the Explain widget's target", "explain"))
# Cheaper than segxai trust's 8 steps (cascading and independent), 32 subsets, 20 deletion steps, 8 samples.
COST_DEFAULTS = {"max_steps": 4, "n_subsets": 16, "deletion_steps": 10, "noise_samples": 3}
SIMILARITIES = (("Spearman", "spearman"), ("SSIM", "ssim"), ("top-k overlap", "top_k"))
PASS_COLOR, FAIL_COLOR = "#4caf50", "#f44336"

# (field of core.trust.CaseQualityRow, row label, tooltip)
MEASURES = (
    ("randomisation_passes", "Randomisation",
     "passes when the map of the fully randomised network has a Spearman correlation below 0.5 with the "
     "trained network's map: the map depends on what the model learned"),
    ("randomisation_spearman", "Spearman, randomised",
     "rank correlation of |relevance| between the trained and the fully randomised network (lower is better)"),
    ("randomisation_ssim", "SSIM, randomised",
     "structural similarity of |relevance| between the trained and the fully randomised network (lower is better)"),
    ("randomisation_top_k", "Top-k, randomised",
     "share of the k most relevant voxels both maps share, k = the region's size (lower is better)"),
    ("faithfulness", "Faithfulness",
     "Pearson r between relevance summed over random voxel subsets and the output drop when they are removed "
     "(higher is better)"),
    ("deletion_auc", "Deletion AUC",
     "area under the output curve as the most relevant voxels are removed first (lower is better)"),
    ("deletion_auc_random", "Deletion AUC, random",
     "the same with voxels removed in random order: the reference the method should beat"),
    ("max_sensitivity", "Max-sensitivity",
     "largest relative change of the map under small input noise (lower is better)"),
    ("above_threshold", "Complexity",
     "share of the crop's voxels above 10% of the largest |relevance| (lower: a sparser map)"),
    ("seconds_explain", "Seconds / explanation", "one explanation of every class on the crop"),
)


def cell_text(measure: str, value: float) -> str:
    """How the table writes one number."""
    if math.isnan(value):
        return "n/a"
    if measure == "randomisation_passes":
        return "passes" if value else "fails"
    return f"{value:.2f}" if measure.startswith("seconds") else f"{value:.3f}"


class RandomisationChart(MplCanvasWidget):
    """Similarity to the trained network's map against the layers randomised, for one class of the last check."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.result = None            # core.trust.RandomisationResult
        self.class_name: Optional[str] = None
        self.measure = "spearman"
        self.canvas.setMinimumHeight(200)
        self.canvas_layout.setContentsMargins(0, 0, 0, 0)
        self.redraw()

    def show_result(self, result, class_name: Optional[str], measure: str) -> None:
        """Draw ``result`` for one class and similarity measure."""
        self.result, self.class_name, self.measure = result, class_name, measure
        self.redraw()

    def draw(self) -> None:
        """The core's randomisation panel for the chosen class (a hint when there is no check yet)."""
        from ..core.trust.plots import draw_randomisation

        if self.result is None or self.class_name is None:
            axes = self.figure.add_subplot()
            axes.set_axis_off()
            axes.text(0.5, 0.5, "No check yet.\nPress Run: the cascading randomisation plot appears here.",
                      ha="center", va="center", transform=axes.transAxes)
            return
        draw_randomisation(self.figure, self.result, measure=self.measure, classes=[self.class_name], title=None)


class TrustWidget(CardChoice, QWidget):
    """Choose a case, a model card and a method; Run checks its maps in the background and shows the numbers and plot."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        # Heavy imports (torch, MONAI, captum) happen here, when the widget is built, not at manifest read.
        from ..core.attribution import available_methods

        self.viewer = viewer
        self.last: Optional[Any] = None     # the last check: core.trust.CaseTrust
        self.rows: dict[str, Any] = {}      # its core.trust.CaseQualityRow per class
        self.case_name = ""

        # --- what to check
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
        self.method = QComboBox()
        self.method.addItems(list(available_methods()))
        self.method.setToolTip("The attribution method whose maps are checked; it follows the relevance the "
                               "Explain widget shows.")
        self.parameters = ParameterForm()
        self.method.currentTextChanged.connect(self.parameters.set_method)
        self.target = QComboBox()
        for text, kind in TARGETS:
            self.target.addItem(text, kind)
        self.target.setToolTip("What the checked maps explain (logits summed over it): each class's predicted "
                               "region, or the region or point the docked Explain widget's Target names.")
        self.target.currentIndexChanged.connect(self._say_target)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto: CUDA, then MPS, then CPU")

        # --- how much work
        defaults = COST_DEFAULTS
        self.max_steps = _spin(1, 64, defaults["max_steps"], "Cascading randomisation depths; the last always "
                                                          "randomises every layer (segxai trust: 8).")
        self.n_subsets = _spin(2, 1024, defaults["n_subsets"], "Faithfulness: random voxel subsets, one forward "
                                                           "pass each (segxai trust: 32).")
        self.deletion_steps = _spin(1, 200, defaults["deletion_steps"], "Deletion curve: equal steps from intact to "
                                                                     "all removed (segxai trust: 20).")
        self.noise_samples = _spin(1, 64, defaults["noise_samples"], "Max-sensitivity: noisy inputs, each explained "
                                                                  "again (segxai trust: 8).")

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write the last check's tables and plots into a folder, as segxai trust does: "
                                    "quality.csv, sanity.csv, sanity_verdicts.csv, sanity.png, metrics.csv, deletion.png.")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._choose_folder)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self, self.progress_bar, self.status, self.cancel_button, noun="trust check")

        # --- what was found
        self.table = QTableWidget(len(MEASURES), 0)
        self.table.setVerticalHeaderLabels([label for _, label, _ in MEASURES])
        for row, (_, label, tip) in enumerate(MEASURES):
            self.table.verticalHeaderItem(row).setToolTip(tip)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._fit_table()
        self.plot_class = QComboBox()
        self.plot_class.setToolTip("The class whose randomisation curve is drawn.")
        self.plot_class.currentIndexChanged.connect(self._replot)
        self.plot_measure = QComboBox()
        for text, key in SIMILARITIES:
            self.plot_measure.addItem(text, key)
        self.plot_measure.setToolTip("The similarity to the trained network's map that is drawn.")
        self.plot_measure.currentIndexChanged.connect(self._replot)
        self.chart = RandomisationChart(viewer)

        card_row = QHBoxLayout()
        card_row.addWidget(self.card_path)
        card_row.addWidget(browse)
        what = QFormLayout()
        what.addRow("Case", self.case_choice)
        what.addRow("Model card", card_row)
        what.addRow("", self.card_info)
        what.addRow("Method", self.method)
        what.addRow(self.parameters)
        what.addRow("Target", self.target)
        what.addRow("Device", self.device)
        cost = QGridLayout()
        for n, (label, spin) in enumerate((("Randomisation steps", self.max_steps), ("Subsets", self.n_subsets),
                                           ("Deletion steps", self.deletion_steps), ("Noise samples", self.noise_samples))):
            cost.addWidget(QLabel(label), n // 2, 2 * (n % 2))
            cost.addWidget(spin, n // 2, 2 * (n % 2) + 1)
        cost_box = QGroupBox("Cost")
        cost_box.setLayout(cost)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        plot_row = QHBoxLayout()
        plot_row.addWidget(QLabel("Plot"))
        plot_row.addWidget(self.plot_class, 1)
        plot_row.addWidget(self.plot_measure, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(what)
        layout.addWidget(cost_box)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addLayout(plot_row)
        layout.addWidget(self.chart, 1)

        self.parameters.set_method(self.method.currentText())
        self._say_target()
        self._follow_explain_widget()
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ the case, its card and the method

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
        """Update the case list; a new case becomes the choice, a new relevance result sets the method."""
        inserted = getattr(event, "value", None) if event is not None and event.type == "inserted" else None
        cases = list(self.cases())
        current = self.case_choice.currentText()
        newest = None
        meta = (getattr(inserted, "metadata", None) or {}) if inserted is not None else {}
        if isinstance(inserted, Image) and meta.get("segxai_role", "image") == "image":
            newest = meta.get("segxai_case") or inserted.name
        self.case_choice.blockSignals(True)
        self.case_choice.clear()
        self.case_choice.addItems(cases)
        chosen = newest if newest in cases else current if current in cases else (cases[-1] if cases else "")
        self.case_choice.setCurrentText(chosen)
        self.case_choice.blockSignals(False)
        if meta.get("segxai_role") == "relevance" and meta.get("segxai_result") is not None:
            self.follow(meta["segxai_result"].method, meta["segxai_result"].parameters)
            if meta.get("segxai_case") in cases:
                self.case_choice.setCurrentText(str(meta["segxai_case"]))
        segmentation_added = isinstance(inserted, Labels) and meta.get("segxai_role") == "segmentation"
        if self.case_choice.currentText() != current or segmentation_added or not self.card_path.text():
            self._case_changed()

    def follow(self, method: str, parameters: Optional[dict] = None) -> None:
        """Check ``method`` with ``parameters`` next (the map the viewer shows), when it is registered."""
        if self.method.findText(method) < 0:
            return
        self.method.setCurrentText(method)
        self.parameters.set_values(dict(parameters or {}))

    def _explain_widget(self):
        """The Explain widget docked in this viewer, or None."""
        from .explain_widget import ExplainWidget

        window = getattr(self.viewer, "window", None)
        docked = list(getattr(window, "dock_widgets", {}).values()) if window is not None else []
        return next((w for w in docked if isinstance(w, ExplainWidget)), None)

    def _follow_explain_widget(self) -> None:
        """Start from the method of a docked Explain widget, if there is one; else saliency."""
        explain = self._explain_widget()
        if explain is None:
            self.method.setCurrentText(DEFAULT_METHOD)
        else:
            self.follow(explain.method.currentText(), explain.parameters.values())

    def _say_target(self, *_: Any) -> None:
        """Say in the status line what the next check will explain."""
        if self.running:
            return
        if self.target.currentData() == "predicted":
            self.status.setText("Ready. The check explains each class's logits over its predicted region.")
        else:
            self.status.setText("Ready. The check explains each class's logits over the Explain widget's target "
                                "(a painted region or a clicked point), taken when you press Run.")

    def target_arguments(self, case) -> dict:
        """assess_case's target arguments: none for the predicted regions, else the docked Explain widget's target."""
        if self.target.currentData() == "predicted":
            return {}
        explain = self._explain_widget()
        if explain is None:
            raise ValueError("No Explain widget is docked to take the target from; open Plugins > SegXAI > Explain "
                             "and choose its target, or check each class's predicted region.")
        arguments = explain.target_arguments(case)
        if arguments["target"] == "predicted":
            arguments.pop("target")   # the same as ours; keep its confident-voxels choice
        return arguments

    def _card_changed(self) -> None:
        """Say what the card expects and predicts, or why it cannot be used."""
        if not self.card_path.text().strip():
            self.card_info.setText("No model card chosen.")
            return
        try:
            card = self._load_card()
        except (ValueError, OSError) as err:
            self.card_info.setText(str(err))
            return
        self.card_info.setText(f"{card.name}: {', '.join(card.modalities)} → {', '.join(card.class_names)}")

    def settings(self):
        """The measures and their cost from the spin boxes: cascading randomisation and the quality metrics."""
        from ..core.trust import TrustSettings

        return TrustSettings(checks=("sanity", "metrics"), modes=("cascading",), max_steps=self.max_steps.value(),
                             n_subsets=self.n_subsets.value(), deletion_steps=self.deletion_steps.value(),
                             noise_samples=self.noise_samples.value())

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether a check is in progress."""
        return self.jobs.running

    def run(self) -> None:
        """Check the chosen method's maps of the chosen case in a worker thread."""
        from ..core.attribution import get_method
        from ..core.segment import channel_indices
        from ..core.trust import assess_case

        if self.jobs.refuse_if_running():
            return
        try:
            card = self._load_card()
            case = case_from_layers(self.case_layers())
            channel_indices(case, card)
            method = get_method(self.method.currentText(), **self.parameters.values())
            target = self.target_arguments(case)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        device = self.device.currentText()
        self.jobs.start(
            partial(assess_case, case, card, [method], settings=self.settings(),
                    device=None if device == "auto" else device, **target),
            case, card, verb="Checking the maps of",
            memory_hint="choose fewer randomisation steps or noise samples, or another device",
            description=f"Trust check of {method.name} on {case.name}", on_result=self._on_result,
        )

    def cancel(self) -> None:
        """Ask the running check to stop at its next step."""
        self.jobs.cancel()

    def _on_result(self, outcome: Outcome) -> None:
        """Fill the table and draw the plot (main thread)."""
        self.show_check(outcome.result, outcome.case.name)

    def show_check(self, trust, case_name: str) -> None:
        """Show a check's numbers (one column per class) and its randomisation plot (``trust``: a core CaseTrust)."""
        from ..core.trust import quality_rows

        self.last, self.case_name = trust, case_name
        self.rows = {row.class_name: row for row in quality_rows(trust, case_name)}
        names = list(trust.problem.class_names)
        self.table.setColumnCount(len(names))
        self.table.setHorizontalHeaderLabels(names)
        for column, class_name in enumerate(names):
            for row, (measure, _, _) in enumerate(MEASURES):
                value = float(getattr(self.rows[class_name], measure))
                item = QTableWidgetItem(cell_text(measure, value))
                item.setData(Qt.ItemDataRole.UserRole, value)
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                if measure == "randomisation_passes" and not math.isnan(value):
                    item.setForeground(QColor(PASS_COLOR if value else FAIL_COLOR))
                self.table.setItem(row, column, item)
        self.plot_class.blockSignals(True)
        self.plot_class.clear()
        self.plot_class.addItems(names)
        self.plot_class.blockSignals(False)
        self._fit_table()
        self._replot()
        self.save_button.setEnabled(True)
        passed = sum(row.randomisation_passes == 1 for row in self.rows.values())
        self.status.setText(
            f"{trust.methods[0]} on {case_name}: {passed} of {len(names)} classes pass the randomisation check "
            f"({len(trust.sanity.layers)} weight layers). Crop {' x '.join(map(str, trust.problem.spatial_shape))}; "
            f"{trust.problem.target.describe()}. Measures {trust.seconds:.1f} s (randomisation "
            f"{trust.sanity.seconds:.1f} s)."
        )

    def save(self, folder: str | Path) -> dict:
        """Write the last check's tables and plots into ``folder`` (created if missing); returns the files by kind."""
        from ..core.trust import write_trust

        if self.last is None:
            raise ValueError("There is no trust check to save yet; press Run first.")
        folder = Path(folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file, not a folder; choose a folder for the trust check.")
        folder.mkdir(parents=True, exist_ok=True)
        return write_trust(self.last, folder, self.case_name)

    def _choose_folder(self) -> None:
        """Ask for a folder and save the last check there; problems become notifications."""
        folder = QFileDialog.getExistingDirectory(self, "Save the trust check into")
        if not folder:
            return
        try:
            files = self.save(folder)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        count = sum(len(f) if isinstance(f, list) else 1 for f in files.values())
        show_info(f"Saved {count} tables and plots of the trust check in {folder}.")
        self.status.setText(f"Saved the check in {folder}.")

    def _fit_table(self) -> None:
        """Make the table exactly as tall as its rows, so every measure shows without scrolling."""
        self.table.resizeRowsToContents()
        height = self.table.horizontalHeader().sizeHint().height() + self.table.verticalHeader().length()
        self.table.setFixedHeight(height + 2 * self.table.frameWidth() + 2)

    def value_at(self, measure: str, class_name: str) -> Optional[float]:
        """The number the table shows for one measure and class (None before a check)."""
        if self.last is None:
            return None
        row = [m for m, _, _ in MEASURES].index(measure)
        item = self.table.item(row, list(self.last.problem.class_names).index(class_name))
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _replot(self, *_: Any) -> None:
        """Draw the last check's randomisation curve for the chosen class and similarity."""
        if self.last is None:
            return
        self.chart.show_result(self.last.sanity, self.plot_class.currentText() or None,
                               self.plot_measure.currentData())

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running check and stop listening to the viewer."""
        self.cancel()
        for signal in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            signal.disconnect(self._refresh_layers)
        self.chart.close()
        super().closeEvent(event)


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    """An integer spin box."""
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
