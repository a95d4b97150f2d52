"""The "Report" dock widget: one click writes a case's one-page report (HTML and PNG) in the background."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from napari.utils.notifications import show_info
from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton

from .compute_widget import ComputeWidget
from .jobs import Outcome

DEFAULT_FOLDER = Path.home() / "segxai-reports"


def make_report(case, card, *, out: Path, method: str, influence: bool, trust_dir: Optional[Path],
                device: Optional[str], show_identifiers: bool = False, progress=None, should_cancel=None) -> dict:
    """Build and write the report (in the worker thread); the written files by kind."""
    from ..core.report import build_report, write_report

    report = build_report(case, card, method=method, influence=influence, trust_dir=trust_dir, device=device,
                          progress=progress, should_cancel=should_cancel, show_identifiers=show_identifiers)
    protected = {Path(p).resolve() for p in case.source_paths}
    if out.resolve() in protected:
        raise ValueError(f"The report folder {out} is one of the case's files; choose another folder.")
    out.mkdir(parents=True, exist_ok=True)
    return write_report(report, out)


class ReportWidget(ComputeWidget):
    """Choose a case and a model card, a method, TracIn, trust numbers and a folder; one click writes the report."""

    noun = "report"
    verb = "Writing the report on"
    memory_hint = "choose another device or a card with a smaller inference roi_size"
    run_text = "Write report"

    def add_controls(self, form: QFormLayout) -> None:
        """The method, TracIn, the trust folder and the report folder."""
        from ..core.attribution import available_methods
        from ..core.report import DEFAULT_METHOD

        self.method = QComboBox()
        self.method.addItems(available_methods())
        self.method.setCurrentText(DEFAULT_METHOD)
        self.method.setToolTip("the relevance method the report shows for every predicted class")
        self.influence = QCheckBox("Training evidence (TracIn)")
        self.influence.setChecked(True)
        self.influence.setToolTip("top proponents and opponents per class; needs a model trained with segxai train")
        self.identifiers = QCheckBox("Show patient identifiers")
        self.identifiers.setToolTip("DICOM studies: put the patient's name, ID, birth date and accession number in "
                                    "the report (left out by default: the report names the case by a pseudonym)")
        self.trust_dir = QLineEdit()
        self.trust_dir.setPlaceholderText("optional: the --out folder of `segxai trust` on this case")
        self.folder = QLineEdit(str(DEFAULT_FOLDER))
        self.folder.setToolTip("the report goes into a sub-folder named after the case")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder)
        folder_row.addWidget(browse)
        form.addRow("Method", self.method)
        form.addRow("", self.influence)
        form.addRow("", self.identifiers)
        form.addRow("Trust numbers", self.trust_dir)
        form.addRow("Report folder", folder_row)
        self.last_written: dict = {}

    def _browse_folder(self) -> None:
        """Pick the folder reports go into."""
        path = QFileDialog.getExistingDirectory(self, "Folder for reports", self.folder.text())
        if path:
            self.folder.setText(path)

    def job_options(self, case, card) -> dict:
        """The method, TracIn, the trust folder and the case's report folder (ValueError when one is wrong)."""
        if not self.folder.text().strip():
            raise ValueError("No report folder is given; type one or pick it with Browse….")
        trust = self.trust_dir.text().strip()
        trust_dir = Path(trust).expanduser() if trust else None
        if trust_dir is not None and not trust_dir.is_dir():
            raise ValueError(f"The trust folder {trust_dir} does not exist; give the --out folder of "
                             "`segxai trust`, or leave it empty.")
        return {"out": Path(self.folder.text().strip()).expanduser() / case.name,
                "method": self.method.currentText(), "influence": self.influence.isChecked(), "trust_dir": trust_dir,
                "show_identifiers": self.identifiers.isChecked()}

    compute = staticmethod(make_report)

    def show_outcome(self, outcome: Outcome) -> None:
        """Say where the report is (main thread)."""
        self.last_written = dict(outcome.result)
        html = self.last_written["html"]
        self.status.setText(f"Report written: {html}")
        show_info(f"Report on {outcome.case.name} written to {html} (and report.png beside it).")
