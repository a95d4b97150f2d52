"""The "Segment" dock widget: run a model card on a case's image layers, add its labels layer."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Optional

from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .card_choice import CardChoice
from .jobs import JobRunner, Outcome
from .._layers import case_from_layers, segmentation_layer_data, segmentation_layer_name

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")


class SegmentWidget(CardChoice, QWidget):
    """Choose a case's image layers, a model card and a device; Run segments in the background."""

    # Unquoted on purpose: napari passes the viewer to a dock widget whose annotation reads
    # exactly "napari.viewer.Viewer", and a quoted one would read "'napari.viewer.Viewer'".
    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        # Heavy imports (torch, MONAI) happen here, when the widget is built, not at manifest read.
        from ..core import model_card as _model_card  # noqa: F401
        from ..core import segment as _segment  # noqa: F401

        self.viewer = viewer
        self._checked: dict[int, bool] = {}

        self.layer_list = QListWidget()
        self.layer_list.setToolTip(
            "Image layers to segment, one per modality; they are matched to the card's "
            "modalities by name."
        )
        self.card_path = QLineEdit()
        self.card_path.setPlaceholderText("model card (.yaml)")
        self.card_path.editingFinished.connect(self._card_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_card)
        self.card_info = QLabel()
        self.card_info.setWordWrap(True)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("auto: CUDA, then MPS, then CPU")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self, self.progress_bar, self.status, self.cancel_button, noun="segmentation")

        card_row = QHBoxLayout()
        card_row.addWidget(self.card_path)
        card_row.addWidget(browse)
        self.form = form = QFormLayout()  # subclasses add their rows
        form.addRow("Case layers", self.layer_list)
        form.addRow("Model card", card_row)
        form.addRow("", self.card_info)
        form.addRow("Device", self.device)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._set_default_card()
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)
        viewer.layers.events.moved.connect(self._refresh_layers)
        self.layer_list.itemChanged.connect(self._remember_check)
        self._refresh_layers()

    # ------------------------------------------------------------------ choices

    def _set_default_card(self) -> None:
        """Preselect the bundled demo model when it is installed."""
        from ..core.paths import demo_model_card_path

        default = demo_model_card_path()
        self.set_model_card(default if default.is_file() else "")

    def _card_changed(self) -> None:
        """Show what the chosen card expects and predicts, or why it cannot be used."""
        if not self.card_path.text().strip():
            self.card_info.setText("No model card chosen.")
            return
        try:
            card = self._load_card()
        except (ValueError, OSError) as err:
            self.card_info.setText(str(err))
            return
        classes = ", ".join(c.name for c in card.classes)
        self.card_info.setText(
            f"{card.name}: {', '.join(card.modalities)} → {classes}"
        )

    def image_layers(self) -> list[Image]:
        """Image layers that can be a case's channels (not RGB, not derived maps)."""
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and not layer.rgb
            and (layer.metadata or {}).get("segxai_role", "image") == "image"
        ]

    def chosen_layers(self) -> list[Image]:
        """The image layers ticked in the list, in list order."""
        by_id = {id(layer): layer for layer in self.image_layers()}
        chosen = []
        for row in range(self.layer_list.count()):
            item = self.layer_list.item(row)
            if item.checkState() == Qt.CheckState.Checked:
                layer = by_id.get(item.data(Qt.ItemDataRole.UserRole))
                if layer is not None:
                    chosen.append(layer)
        return chosen

    def _remember_check(self, item: QListWidgetItem) -> None:
        """Keep the user's tick across list refreshes."""
        self._checked[item.data(Qt.ItemDataRole.UserRole)] = item.checkState() == Qt.CheckState.Checked

    def _refresh_layers(self, event: Any = None) -> None:
        """List the image layers; a newly opened case becomes the selection."""
        layers = self.image_layers()
        known = {key for key in self._checked if key in {id(layer) for layer in layers}}
        new = [layer for layer in layers if id(layer) not in known]
        self._checked = {key: self._checked[key] for key in known}
        if new:
            newest_case = (new[-1].metadata or {}).get("segxai_case")
            if newest_case is not None:
                for layer in layers:
                    same_case = (layer.metadata or {}).get("segxai_case") == newest_case
                    if id(layer) not in known or not same_case:
                        self._checked[id(layer)] = same_case
                suggested = (new[-1].metadata or {}).get("segxai_suggested_card")
                if suggested:  # a case that names its model (the demo sample) brings it along
                    self.set_model_card(suggested)
            else:
                select = not any(self._checked.values())
                for layer in new:
                    self._checked[id(layer)] = select
        self.layer_list.blockSignals(True)
        self.layer_list.clear()
        for layer in layers:
            case = (layer.metadata or {}).get("segxai_case")
            item = QListWidgetItem(f"{layer.name}  ({case})" if case else layer.name)
            item.setData(Qt.ItemDataRole.UserRole, id(layer))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if self._checked.get(id(layer)) else Qt.CheckState.Unchecked
            )
            self.layer_list.addItem(item)
        self.layer_list.blockSignals(False)

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether a segmentation is in progress."""
        return self.jobs.running

    def run(self) -> None:
        """Segment the chosen layers with the chosen card in a worker thread."""
        if self.jobs.refuse_if_running():
            return
        try:
            card = self._load_card()
            case = case_from_layers(self.chosen_layers())
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        from ..core.segment import segment

        device = self.device.currentText()
        self.jobs.start(
            partial(segment, case, card, device=None if device == "auto" else device),
            case, card, verb="Segmenting",
            memory_hint="choose another device or a card with a smaller inference roi_size",
            description=f"Segmenting {case.name} with {card.name}", on_result=self._on_result,
        )

    def cancel(self) -> None:
        """Ask the running segmentation to stop after its current window."""
        self.jobs.cancel()

    def _on_result(self, outcome: Outcome) -> None:
        """Add the segmentation (main thread)."""
        layer = self._show_segmentation(outcome)
        seg = outcome.result
        self.status.setText(f"{layer.name}: {seg.seconds:.1f} s on {seg.device}.")

    def _show_segmentation(self, outcome: Outcome):
        """Add the labels layer, replacing this case's previous segmentation layer."""
        data, kwargs, _ = segmentation_layer_data(outcome.result, outcome.case, outcome.card.path)
        name = segmentation_layer_name(outcome.case.name)
        index = None
        for i, existing in enumerate(self.viewer.layers):
            if existing.name == name and (existing.metadata or {}).get("segxai_role") == "segmentation":
                index = i
                self.viewer.layers.remove(existing)
                break
        layer = self.viewer.add_labels(data, **kwargs)
        if index is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer), index)
        return layer

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running segmentation when the widget closes."""
        self.cancel()
        super().closeEvent(event)
