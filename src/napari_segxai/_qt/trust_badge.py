"""The trust badge of the Explain widget: the chosen method's measured trust for the chosen model, and Check.

The verdict (:mod:`..core.trust.verdict`) is measured once per model and method and cached; the
badge reads it whenever the card or the method changes. Before it is measured the badge says
"not checked" and Check measures it in the background (model parameter randomisation and
faithfulness on the chosen case).
"""

from __future__ import annotations

from typing import Callable

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

COLOURS = {"passed": "#3cb44b", "FAILS": "#f58231", "not checked": "#a0a0a0"}


class TrustBadge(QWidget):
    """A one-line verdict and a Check button (enabled while the verdict is not measured)."""

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
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.check_button)

    def show_for(self, card, method: str) -> str:
        """Show the verdict of ``method`` for ``card``'s model (no card: nothing to say); the text shown."""
        from ..core.trust.verdict import NOT_CHECKED, badge

        text = NOT_CHECKED if card is None else badge(card, method)
        colour = next((c for key, c in COLOURS.items() if key in text), COLOURS["not checked"])
        self.label.setText(text)
        self.label.setStyleSheet(f"color: {colour};")
        self.check_button.setEnabled(card is not None and text == NOT_CHECKED)
        return text
