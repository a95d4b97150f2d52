"""The estimated cost of an explanation (or a trust check) beside Run, and a question before anything that long starts."""

from __future__ import annotations

import threading
from typing import Callable, Optional

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QMessageBox, QWidget

from ..core.attribution.cost import CONFIRM_OVER_S, duration
from ..core.progress import Cancelled


def ask(parent: QWidget, cost) -> bool:
    """Whether the user starts an explanation (or what ``cost.noun`` names) estimated at ``cost`` (a yes/no question)."""
    noun = getattr(cost, "noun", "explanation")
    answer = QMessageBox.question(
        parent, f"A long {noun}",
        f"This {noun} is estimated at {duration(cost.seconds)} on this device: {cost.sentence()}.\n\n"
        "Start it? (Coarser settings are faster: see the method's parameters.)",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class CostGate(QObject):
    """Shows the cost a worker estimated on ``label`` and, above ``confirm_over_s``, asks before the worker goes on."""

    told = Signal(object)   # a Cost, from the worker thread to the main thread
    confirm_over_s = CONFIRM_OVER_S

    def __init__(self, label: QLabel, parent: QWidget):
        super().__init__(parent)
        self.label = label
        self._answered = threading.Event()
        self._go = False
        self.told.connect(self._on_told)

    def __call__(self, cost, should_cancel: Optional[Callable[[], bool]] = None) -> None:
        """In the worker: show ``cost``, wait for the answer when it is long; Cancelled when declined or cancelled."""
        self._answered.clear()
        self.told.emit(cost)
        while not self._answered.wait(0.05):
            if should_cancel is not None and should_cancel():
                raise Cancelled("Cancelled while asking whether to start.")
        if not self._go:
            raise Cancelled(f"Not started: estimated at {duration(cost.seconds)}.")

    def _on_told(self, cost) -> None:
        """On the main thread: say the estimate, and ask when it is over the limit."""
        self.label.setText(f"≈ {duration(cost.seconds)}")
        self.label.setToolTip(f"Estimated before the work started: {cost.sentence()}.")
        self._go = cost.seconds <= self.confirm_over_s or ask(self.parent(), cost)
        self._answered.set()
