"""The "Trust" dock widget: does a method's relevance map of the case deserve trust? Sanity check and quality metrics.

For the chosen case, model card and attribution method, one background job runs
``core.trust.assess_case`` as ``segxai trust`` does (each class's logits summed over its predicted
region, or over the target the Explain widget publishes on the case's layers, on a crop around
it): cascading model-parameter randomisation and the quality metrics. The widget shows one column
of ``quality_rows`` numbers per class and the cascading-randomisation plot. The cost settings (the
Cost box) start lower than the ``segxai trust`` defaults; the estimated cost shows beside Run once the
crop is timed, and a check estimated over 3 minutes asks first (as the Explain widget does). The method follows the relevance layers
that arrive in the viewer, so the map on screen is the one checked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..core.attribution.base import DEFAULT_METHOD
from .._layers import Key, Role, layer_role
from .compute_widget import ComputeWidget
from .cost_gate import CostGate
from .explain_parameters import ParameterForm
from .jobs import Outcome
from .targets import published, target_arguments
from .trust_display import FAIL_COLOR, PASS_COLOR, RandomisationChart, cell_text, similarity_choices, table_measures

if TYPE_CHECKING:
    import napari

# (shown text, kind): what the checked maps explain
TARGETS = (("each class's predicted region", "predicted"), ("the Explain widget's target", "explain"))
# Cheaper than segxai trust's 8 steps (cascading and independent), 32 subsets, 20 deletion steps, 8 samples.
COST_DEFAULTS = {"max_steps": 4, "n_subsets": 16, "deletion_steps": 10, "noise_samples": 3}


class TrustWidget(ComputeWidget):
    """Choose a case, a model card and a method; Run checks its maps in the background and shows the numbers and plot."""

    noun = "trust check"
    memory_hint = "choose fewer randomisation steps or noise samples, or another device"

    last: Optional[Any] = None     # the last check: core.trust.CaseTrust
    rows: dict[str, Any] = {}      # its core.trust.CaseQualityRow per class (replaced, never changed in place)
    case_name = ""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.parameters.set_method(self.method.currentText())
        self._say_target()
        choice = published(self.case_layers())   # start from what the Explain widget explains, if there is one
        if choice is None:
            self.method.setCurrentText(DEFAULT_METHOD)
        else:
            self.follow(choice.method, choice.parameters)

    def add_controls(self, form: QFormLayout) -> None:
        """The method and its parameters, the target and the cost of the measures."""
        # Heavy imports (captum) happen here, when the widget is built, not at manifest read.
        from ..core.attribution import available_methods

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
                               "region, or the region or point the Explain widget's Target names.")
        self.target.currentIndexChanged.connect(self._say_target)
        defaults = COST_DEFAULTS
        self.max_steps = _spin(1, 64, defaults["max_steps"], "Cascading randomisation depths; the last always "
                                                          "randomises every layer (segxai trust: 8).")
        self.n_subsets = _spin(2, 1024, defaults["n_subsets"], "Faithfulness: random voxel subsets, one forward "
                                                           "pass each (segxai trust: 32).")
        self.deletion_steps = _spin(1, 200, defaults["deletion_steps"], "Deletion curve: equal steps from intact to "
                                                                     "all removed (segxai trust: 20).")
        self.noise_samples = _spin(1, 64, defaults["noise_samples"], "Max-sensitivity: noisy inputs, each explained "
                                                                  "again (segxai trust: 8).")
        cost = QGridLayout()
        for n, (label, spin) in enumerate((("Randomisation steps", self.max_steps), ("Subsets", self.n_subsets),
                                           ("Deletion steps", self.deletion_steps), ("Noise samples", self.noise_samples))):
            cost.addWidget(QLabel(label), n // 2, 2 * (n % 2))
            cost.addWidget(spin, n // 2, 2 * (n % 2) + 1)
        cost_box = QGroupBox("Cost")
        cost_box.setLayout(cost)
        form.addRow("Method", self.method)
        form.addRow(self.parameters)
        form.addRow("Target", self.target)
        form.addRow(cost_box)

    def add_results(self, layout: QBoxLayout) -> None:
        """Save… beside Run, then the table of measures and the randomisation plot."""
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write the last check's tables and plots into a folder, as segxai trust does: "
                                    "quality.csv, sanity.csv, sanity_verdicts.csv, sanity.png, metrics.csv, deletion.png.")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._choose_folder)
        self.buttons.addWidget(self.save_button)
        self.cost = QLabel("")
        self.buttons.addWidget(self.cost)
        self.gate = CostGate(self.cost, self)   # the estimate beside Run; over 3 minutes it asks first
        self.measures = table_measures()   # (field, label, tooltip) per row, from the core registries
        self.table = QTableWidget(len(self.measures), 0)
        self.table.setVerticalHeaderLabels([label for _, label, _ in self.measures])
        for row, (_, label, tip) in enumerate(self.measures):
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
        for text, key in similarity_choices():
            self.plot_measure.addItem(text, key)
        self.plot_measure.setToolTip("The similarity to the trained network's map that is drawn.")
        self.plot_measure.currentIndexChanged.connect(self._replot)
        self.chart = RandomisationChart(self.viewer)
        plot_row = QHBoxLayout()
        plot_row.addWidget(QLabel("Plot"))
        plot_row.addWidget(self.plot_class, 1)
        plot_row.addWidget(self.plot_measure, 1)
        layout.addWidget(self.table)
        layout.addLayout(plot_row)
        layout.addWidget(self.chart, 1)

    # ------------------------------------------------------------------ following the maps on screen

    def layers_changed(self, inserted: Any) -> None:
        """A new relevance result sets the method and its parameters, and its case becomes the choice."""
        meta = (getattr(inserted, "metadata", None) or {}) if inserted is not None else {}
        result = meta.get(Key.RESULT)
        if isinstance(inserted, Image) and layer_role(inserted) == Role.RELEVANCE and result is not None:
            self.follow(result.method, result.parameters)
            if meta.get(Key.CASE) in self.cases():
                self.case_choice.setCurrentText(str(meta[Key.CASE]))

    def follow(self, method: str, parameters: Optional[dict] = None) -> None:
        """Check ``method`` with ``parameters`` next (the map the viewer shows), when it is registered."""
        if self.method.findText(method) < 0:
            return
        self.method.setCurrentText(method)
        self.parameters.set_values(dict(parameters or {}))

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
        """assess_case's target arguments: none for the predicted regions, else the target the Explain widget published."""
        if self.target.currentData() == "predicted":
            return {}
        choice = published(self.case_layers())
        if choice is None:
            raise ValueError(f"No Explain widget names a target for {case.name}; open Plugins > SegXAI > Explain, "
                             "choose this case and its target there, or check each class's predicted region.")
        arguments = target_arguments(self.viewer, case, choice)
        if arguments["target"] == "predicted":
            arguments.pop("target")   # the same as ours; keep its confident-voxels choice
        return arguments

    # ------------------------------------------------------------------ running

    def settings(self):
        """The measures and their cost from the spin boxes: cascading randomisation and the quality metrics."""
        from ..core.trust import TrustSettings

        return TrustSettings(checks=("sanity", "metrics"), modes=("cascading",), max_steps=self.max_steps.value(),
                             n_subsets=self.n_subsets.value(), deletion_steps=self.deletion_steps.value(),
                             noise_samples=self.noise_samples.value())

    def job_options(self, case, card) -> dict:
        """The method, the target and the settings (ValueError when the target is incomplete)."""
        from ..core.attribution import get_method

        method = get_method(self.method.currentText(), **self.parameters.values())
        return {"methods": [method], "settings": self.settings(), "gate": self.gate, **self.target_arguments(case)}

    def job_description(self, case, card, options: dict) -> str:
        """Trust check of <method> on <case>."""
        return f"Trust check of {options['methods'][0].name} on {case.name}"

    @staticmethod
    def compute(case, card, *, methods, progress=None, should_cancel=None, gate=None, **options):
        """Randomisation and quality measures of the methods' maps, their cost through ``gate`` first (worker thread)."""
        from ..core.trust import assess_case

        before = None if gate is None else (lambda cost: gate(cost, should_cancel))
        return assess_case(case, card, methods, progress=progress, should_cancel=should_cancel, before=before,
                           **options)

    def show_outcome(self, outcome: Outcome) -> None:
        """Fill the table and draw the plot (main thread)."""
        self.show_check(outcome.result, outcome.case.name)

    def show_check(self, trust, case_name: str) -> None:
        """Show a check's numbers (one column per class) and its randomisation plot (``trust``: a core CaseTrust)."""
        from ..core.trust import quality_rows

        self.last, self.case_name = trust, case_name
        if trust.settings is not None:  # the settings it was measured with, so a rerun repeats it
            for spin, value in ((self.max_steps, trust.settings.max_steps), (self.n_subsets, trust.settings.n_subsets),
                                (self.deletion_steps, trust.settings.deletion_steps),
                                (self.noise_samples, trust.settings.noise_samples)):
                if value is not None:
                    spin.setValue(int(value))
        self.rows = {row.class_name: row for row in quality_rows(trust, case_name)}
        names = list(trust.problem.class_names)
        self.table.setColumnCount(len(names))
        self.table.setHorizontalHeaderLabels(names)
        for column, class_name in enumerate(names):
            for row, (measure, _, _) in enumerate(self.measures):
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
        row = [m for m, _, _ in self.measures].index(measure)
        item = self.table.item(row, list(self.last.problem.class_names).index(class_name))
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def _replot(self, *_: Any) -> None:
        """Draw the last check's randomisation curve for the chosen class and similarity."""
        if self.last is None:
            return
        self.chart.show_result(self.last.sanity, self.plot_class.currentText() or None,
                               self.plot_measure.currentData())

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running check, stop listening to the viewer and close the chart."""
        self.chart.close()
        super().closeEvent(event)


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    """An integer spin box."""
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
