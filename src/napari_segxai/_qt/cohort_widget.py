"""The "Cohort" dock widget: the cases of a ``segxai cohort`` run ranked by anomaly score; double-click opens a case.

It reads the output folder of ``segxai cohort`` (``anomalies.csv``, ``summary.json`` and each
case's ``done.json``); nothing is computed here. One table per class (chosen in a list): rank,
case, Isolation Forest anomaly score, whether the case is flagged, and Dice against the case's
reference label. Double-clicking a row opens that case in the viewer through the plugin's reader.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.cohort.report import RankedCase, read_ranking

if TYPE_CHECKING:
    import napari

COLUMNS = ("Rank", "Case", "Score", "Flagged", "Dice")
TIPS = ("Rank by anomaly score for the class (1 = most anomalous)", "Case identifier (its folder or file name)",
        "Isolation Forest anomaly score s(x, n): near 1 = isolated quickly, about 0.5 or less = ordinary",
        "Flagged as an outlier at the run's contamination", "Dice of the class against the case's reference label")


class CohortWidget(QWidget):
    """Cases of a cohort run sorted by anomaly score per class; double-click a row to open the case."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.folder: Optional[Path] = None
        self.ranking: dict[str, list[RankedCase]] = {}
        self.summary: dict = {}

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("the --out folder of segxai cohort")
        self.path_edit.returnPressed.connect(lambda: self.load(self.path_edit.text()))
        browse = QPushButton("Open…")
        browse.setToolTip("Choose the output folder of a segxai cohort run")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)

        self.class_box = QComboBox()
        self.class_box.setToolTip("The class whose anomaly ranking is listed")
        self.class_box.currentTextChanged.connect(self._fill)
        self.summary_label = QLabel("No cohort loaded.")
        self.summary_label.setWordWrap(True)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for c, tip in enumerate(TIPS):
            self.table.horizontalHeaderItem(c).setToolTip(tip)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)  # by rank until a header is clicked
        self.table.setToolTip("Double-click a case to open it in the viewer; click a header to sort")
        self.table.cellDoubleClicked.connect(lambda r, _c: self.open_row(r))

        form = QFormLayout()
        form.addRow("Cohort", row)
        form.addRow("Class", self.class_box)
        self.setMinimumWidth(390)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table, 1)

    def _browse(self) -> None:
        """Ask for a cohort output folder and load it."""
        folder = QFileDialog.getExistingDirectory(self, "Output folder of segxai cohort", self.path_edit.text())
        if folder:
            self.load(folder)

    def load(self, folder: str | Path) -> bool:
        """Read a cohort output folder and list its ranking; a wrong folder is reported, not raised."""
        try:
            ranking, summary = read_ranking(folder)
        except (ValueError, OSError) as err:
            show_error(str(err))
            return False
        self.folder, self.ranking, self.summary = Path(folder), ranking, summary
        self.path_edit.setText(str(folder))
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItems(list(ranking))
        self.class_box.blockSignals(False)
        self._fill(self.class_box.currentText())
        return True

    def rows(self) -> list[RankedCase]:
        """The ranked cases of the chosen class, most anomalous first."""
        return self.ranking.get(self.class_box.currentText(), [])

    def _fill(self, class_name: str) -> None:
        """Show one class's ranking and its summary line."""
        rows = self.ranking.get(class_name, [])
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, item in enumerate(rows):
            cells = (item.rank, item.case, round(item.score, 3), "yes" if item.flagged else "",
                     "" if item.dice is None else round(item.dice, 3))
            for c, value in enumerate(cells):
                cell = QTableWidgetItem()
                cell.setData(Qt.ItemDataRole.DisplayRole, value)
                cell.setData(Qt.ItemDataRole.UserRole, r)
                if item.flagged:
                    cell.setForeground(Qt.GlobalColor.red)
                self.table.setItem(r, c, cell)
        self.table.setSortingEnabled(True)
        self.summary_label.setText(self._summary_text(class_name))

    def _summary_text(self, class_name: str) -> str:
        """Cases, failures, flagged cases and the Dice correlation of one class, in a line or two."""
        if not self.summary:
            return "No cohort loaded."
        parts = [f"{self.summary.get('finished', 0)} of {self.summary.get('cases', 0)} cases finished"]
        failed = self.summary.get("failed") or {}
        if failed:
            parts.append(f"{len(failed)} failed (failures.csv)")
        rows = self.ranking.get(class_name, [])
        parts.append(f"{sum(r.flagged for r in rows)} flagged for {class_name}")
        for c in self.summary.get("dice_correlation", []):
            if c["class"] == class_name and c.get("spearman_rho") is not None and not math.isnan(c["spearman_rho"]):
                parts.append(f"anomaly vs Dice: Spearman {c['spearman_rho']:+.2f} (p = {c['p_value']:.2g}, n = {c['n']})")
        return "; ".join(parts) + "."

    def open_row(self, row: int) -> None:
        """Open the case shown in table row ``row`` (whatever the sort order) in the viewer."""
        cell = self.table.item(row, 0)
        if cell is None:
            return
        self.open_case(self.rows()[int(cell.data(Qt.ItemDataRole.UserRole))])

    def open_case(self, item: RankedCase) -> None:
        """Add a ranked case's layers to the viewer through the plugin's reader."""
        from .._reader import napari_get_reader

        if item.source is None or not item.source.exists():
            show_error(f"The files of case {item.case} are not at {item.source}; were they moved since the cohort run?")
            return
        reader = napari_get_reader(str(item.source))
        if reader is None:
            show_error(f"Cannot open case {item.case} from {item.source}; check its files with segxai explain.")
            return
        for data, kwargs, kind in reader(str(item.source)):
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        show_info(f"Opened {item.case} (rank {item.rank} for {item.class_name}, anomaly score {item.score:.3f}).")
