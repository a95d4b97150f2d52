"""The "DICOM study" dock widget: see a study's series, confirm or change which one is which modality, open it.

A study exported from the PACS holds series the rules of :mod:`..core.io.dicom_case` map to
modalities from their descriptions. This table shows every image series (number, description,
plane, slices) with the modality it was mapped to; the user changes any of them and the reference
grid, then **Open case** reads the chosen series, puts them on the reference series' grid (world
coordinates, no registration) and adds one image layer per modality. What was left out and any
series that may be misregistered are said below the table.
"""

from __future__ import annotations

from pathlib import Path
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                            QPushButton, QTableWidget, QTableWidgetItem)

from .._layers import Key, Role, case_layer_data, layer_role
from .._orientation import ViewOrientation
from .compute_widget import ComputeWidget
from .jobs import Outcome

NOT_USED = "—"
COLUMNS = ("Series", "Description", "Plane", "Slices", "Modality")


def open_study(case, card, *, study, series: dict, reference: str, progress=None, should_cancel=None):
    """The case of ``study`` with the chosen series (worker thread)."""
    from ..core.io.dicom_case import case_from_study

    return case_from_study(study, series=series, reference=reference)


class DicomStudyWidget(ComputeWidget):
    """Read a DICOM study, check the series-to-modality table, open the case as image layers."""

    noun = "study"
    verb = "Opening"
    run_text = "Open case"
    has_case = False
    has_card = False
    has_device = False

    def add_controls(self, form: QFormLayout) -> None:
        """The study folder, the series table, the reference grid and the notes."""
        from ..core import naming

        self.study = None
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("a DICOM study or series folder, or a zip of one")
        self.folder.returnPressed.connect(self.read_study)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        read = QPushButton("Read")
        read.setToolTip("read the study's headers and map its series to modalities")
        read.clicked.connect(self.read_study)
        row = QHBoxLayout()
        for widget in (self.folder, browse, read):
            row.addWidget(widget)
        form.addRow("Study", row)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(160)
        form.addRow(self.table)
        self.modalities = list(naming.CANONICAL_MODALITIES)
        self.reference = QComboBox()
        self.reference.setToolTip("the modality whose series gives the case's grid; the others are resampled onto it "
                                  "in world coordinates (no registration)")
        form.addRow("Reference grid", self.reference)
        self.notes = QLabel("")
        self.notes.setWordWrap(True)
        form.addRow(self.notes)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "DICOM study folder", self.folder.text())
        if path:
            self.folder.setText(path)
            self.read_study()

    def read_study(self) -> None:
        """Read the study's headers and fill the table with each series and the modality it was mapped to."""
        from ..core.io.dicom import plane_of, read_study
        from ..core.io.dicom_case import series_modality

        text = self.folder.text().strip()
        if not text:
            self.refuse(ValueError("No study is given; type its folder or pick it with Browse…."))
            return
        self.status.setText(f"Reading {text} …")
        try:
            self.study = read_study(Path(text).expanduser())
        except (ValueError, OSError) as err:
            self.study = None
            self.table.setRowCount(0)
            self.refuse(err)
            return
        self.table.setRowCount(len(self.study.series))
        for row, item in enumerate(self.study.series):
            slices = len(item.frames) or len(item.files)
            for column, value in enumerate((item.key, item.description or item.protocol, plane_of(item.orientation),
                                            str(slices))):
                self.table.setItem(row, column, QTableWidgetItem(value))
            choice = QComboBox()
            choice.addItems([NOT_USED, *self.modalities])
            choice.setEditable(True)  # a model may read other sequences (adc, dwi, ...): type their name
            choice.setCurrentText(series_modality(item) or NOT_USED)
            choice.currentTextChanged.connect(self._mapping_changed)
            self.table.setCellWidget(row, len(COLUMNS) - 1, choice)
        self.table.resizeColumnsToContents()
        shown = min(len(self.study.series), 8)  # up to 8 rows without scrolling
        self.table.setMinimumHeight(self.table.horizontalHeader().height() + 4
                                    + sum(self.table.rowHeight(r) for r in range(shown)))
        self.notes.setText(" ".join(self.study.notes))
        self._mapping_changed()
        self.status.setText(f"{len(self.study.series)} image series read; check the modality of each, then Open case.")

    def mapping(self) -> dict[str, str]:
        """{modality: series key} as the table says (ValueError when a modality is chosen twice or none is)."""
        chosen: dict[str, str] = {}
        for row in range(self.table.rowCount()):
            modality = self.table.cellWidget(row, len(COLUMNS) - 1).currentText().strip().lower()
            if modality in (NOT_USED, ""):
                continue
            key = self.table.item(row, 0).text()
            if modality in chosen:
                raise ValueError(f"Series {chosen[modality]} and {key} are both {modality}; choose one of them "
                                 f"(set the other to {NOT_USED}).")
            chosen[modality] = key
        if not chosen:
            raise ValueError("No series is mapped to a modality; choose the modality of at least one series.")
        return chosen

    def _mapping_changed(self, *_) -> None:
        """Offer the mapped modalities as the reference grid, keeping the choice when it is still there."""
        from ..core import naming

        current = self.reference.currentText()
        try:
            modalities = sorted(self.mapping(), key=naming.modality_sort_key)
        except ValueError:
            modalities = []
        self.reference.clear()
        self.reference.addItems(modalities)
        if current in modalities:
            self.reference.setCurrentText(current)

    def job_options(self, case, card) -> dict:
        """The study and the table's choices (ValueError with a sentence when something is missing)."""
        if self.study is None:
            raise ValueError("No study is read yet; choose its folder and press Read.")
        series = self.mapping()
        return {"study": self.study, "series": series, "reference": self.reference.currentText()}

    compute = staticmethod(open_study)

    def job_description(self, case, card, options: dict) -> str:
        return f"Opening the study ({', '.join(f'{m} = series {k}' for m, k in options['series'].items())})"

    def show_outcome(self, outcome: Outcome) -> None:
        """Add the case's image layers (replacing an earlier opening of the same study) and say what to know."""
        case = outcome.result
        for layer in [layer for layer in self.viewer.layers if (layer.metadata or {}).get(Key.CASE) == case.name
                      and layer_role(layer) == Role.IMAGE]:
            self.viewer.layers.remove(layer)
        ViewOrientation.of(self.viewer)  # a case opens axial, radiologically, with its letters
        for data, kwargs, _ in case_layer_data(case):
            self.viewer.add_image(data, **kwargs)
        said = " ".join(case.notes)
        self.notes.setText(said)
        self.status.setText(f"Opened {case.name}: {', '.join(case.modalities)} on the {self.reference.currentText()} "
                            "series' grid.")
        if said:
            show_info(said)
