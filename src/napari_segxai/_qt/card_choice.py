"""The model-card choice the dock widgets share: a path field, Browse…, and the card of a case's segmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from qtpy.QtWidgets import QFileDialog


class CardChoice:
    """Mixin for a widget with ``viewer``, a ``card_path`` line edit and ``_card_changed`` (what it shows of the card).

    Widgets that pick a case from a ``case_choice`` combo box also get :meth:`_case_changed`.
    """

    _trusted_card: Optional[Path] = None   # a card the user trusts although it does not say 'trusted: true'

    def set_model_card(self, path: str | Path, *, trusted: bool = False) -> None:
        """Choose the model card at ``path`` and show what the widget says about it.

        ``trusted`` (``segxai demo --trust-model``) lets this card's pickled weights be fully unpickled, as
        'trusted: true' in the card would; it holds for this path only, until another card is chosen as trusted.
        """
        if trusted:
            self._trusted_card = Path(path).expanduser().resolve()
        self.card_path.setText(str(path))
        self._card_changed()

    def _browse_card(self) -> None:
        """Pick a model card with a file dialog."""
        start = str(Path(self.card_path.text()).parent) if self.card_path.text() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model card", start, "Model cards (*.yaml *.yml)")
        if path:
            self.set_model_card(path)

    def _load_card(self):
        """The model card named in the path field (ValueError with a sentence when it is unusable)."""
        from ..core.model_card import load_model_card

        text = self.card_path.text().strip()
        if not text:
            raise ValueError("No model card is chosen; pick a card (.yaml) with Browse….")
        path = Path(text).expanduser()
        card = load_model_card(path)
        if not card.trusted and self._trusted_card is not None and path.resolve() == self._trusted_card:
            card = dataclasses.replace(card, trusted=True)
        return card

    def _segmentation_card(self, case_name: str) -> Optional[str]:
        """The model card of the case's last segmentation layer, if any."""
        for layer in reversed(list(self.viewer.layers)):
            meta = layer.metadata or {}
            if meta.get("segxai_role") == "segmentation" and meta.get("segxai_case") == case_name:
                card = meta.get("segxai_model_card")
                if card:
                    return str(card)
        return None

    def _case_changed(self, *_: Any) -> None:
        """Take the card of the chosen case's segmentation, else keep the field, else the bundled demo card."""
        card = self._segmentation_card(self.case_choice.currentText())
        if card is None and not self.card_path.text().strip():
            from ..core.paths import demo_model_card_path

            default = demo_model_card_path()
            card = str(default) if default.is_file() else None
        if card is not None and card != self.card_path.text():
            self.set_model_card(card)
