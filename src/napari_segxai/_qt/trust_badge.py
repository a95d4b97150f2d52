"""The trust badge of the Explain widget: the chosen method's measured trust for the chosen model, and Check.

The verdict (:mod:`..core.trust.verdict`) is measured once per model and method and cached; the
badge reads it whenever the card or the method changes. Before it is measured the badge says
"not checked" and offers Check; with "Check after a map" ticked (the default) the check also starts
by itself, in the background, once a map of an unchecked method is on screen. The check has its own
worker, bar and Stop button, so the user can go on explaining while it runs.

``SEGXAI_AUTO_TRUST=0`` in the environment unticks "Check after a map" by default (slow machines,
the test suite).
"""

from __future__ import annotations

import os
from typing import Callable

from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from .jobs import JobRunner

COLOURS = {"passed": "#3cb44b", "FAILS": "#f58231", "not checked": "#a0a0a0"}


def auto_check_default() -> bool:
    """Whether the check starts by itself after a map: yes unless ``SEGXAI_AUTO_TRUST`` is 0/no/false/off."""
    return os.environ.get("SEGXAI_AUTO_TRUST", "1").strip().lower() not in {"0", "no", "false", "off"}


class TrustBadge(QWidget):
    """A one-line verdict, Check and Stop, the check's own progress bar, and whether it starts by itself."""

    def __init__(self, check: Callable[[], None], parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel("not checked")
        self.label.setWordWrap(True)
        self.label.setToolTip("Model parameter randomisation (passes when the map changes once the learned weights "
                              "are destroyed) and faithfulness, measured once for this model and method.")
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("Measure this method's trust for this model on the chosen case (minutes on a "
                                     "CPU); kept for every later map, report and segxai explain.")
        self.check_button.clicked.connect(check)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the trust check; nothing is kept and the badge stays 'not checked'.")
        self.auto = QCheckBox("Check after a map")
        self.auto.setChecked(auto_check_default())
        self.auto.setToolTip("Start the check in the background as soon as a map of an unchecked method is shown.")
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumHeight(8)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setVisible(False)
        self.jobs = JobRunner(self, self.progress_bar, self.label, self.stop_button, noun="trust check")
        self.jobs.ended.connect(self._check_ended)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.auto, 1)
        row.addWidget(self.check_button)
        row.addWidget(self.stop_button)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.label)
        column.addWidget(self.progress_bar)
        column.addLayout(row)
        self._shown: tuple = (None, "")

    @property
    def checking(self) -> bool:
        """Whether a trust check is running."""
        return self.jobs.running

    def measure(self, case, card, method: str, *, device, memory_hint: str) -> None:
        """Measure ``method``'s verdict for ``card`` on ``case`` in the background; the badge shows it when it arrives."""
        from functools import partial

        from ..core.trust.verdict import measure_verdict

        self.check_button.setEnabled(False)
        self.progress_bar.setVisible(True)
        self.jobs.start(partial(measure_verdict, case, card, [method], device=device), case, card,
                        description=f"Checking the trust of {method} for {card.name} on {case.name}",
                        memory_hint=memory_hint, on_result=lambda _: None)

    def after_map(self, outcome, *, device, memory_hint: str) -> None:
        """Start the check by itself once a map of an unchecked method is shown ("Check after a map" ticked)."""
        from ..core.trust.verdict import NOT_CHECKED, badge

        if outcome is None or outcome.card is None or outcome.case is None or outcome.result is None:
            return
        method = outcome.result.method
        if self.auto.isChecked() and not self.checking and badge(outcome.card, method) == NOT_CHECKED:
            self.measure(outcome.case, outcome.card, method, device=device, memory_hint=memory_hint)
            self.show_for(*self._shown)

    def _check_ended(self) -> None:
        """Hide the bar and show the verdict (after an error, told in a notification, or a cancel: 'not checked')."""
        self.progress_bar.setVisible(False)
        self.show_for(*self._shown)

    def show_for(self, card, method: str) -> str:
        """Show the verdict of ``method`` for ``card``'s model (no card: nothing to say); the text shown."""
        from ..core.trust.verdict import NOT_CHECKED, badge

        self._shown = (card, method)
        if self.checking:
            return "being checked"
        text = NOT_CHECKED if card is None else badge(card, method)
        colour = next((c for key, c in COLOURS.items() if key in text), COLOURS["not checked"])
        self.label.setText(text)
        self.label.setStyleSheet(f"color: {colour};")
        self.check_button.setEnabled(card is not None and text == NOT_CHECKED)
        return text
