"""The "Segment" dock widget: run a model card on a case's image layers, add its labels layer."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
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

from .._layers import case_from_layers, segmentation_layer_data, segmentation_layer_name

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class _Outcome:
    """What a segmentation job ended with: a result, a user-facing error sentence, or a cancel."""

    case: Any = None
    card: Any = None
    segmentation: Any = None
    error: Optional[str] = None
    cancelled: bool = False


def _segment_job(case, card, device: Optional[str], progress, should_cancel) -> _Outcome:
    """Segment ``case`` with ``card`` (run in a worker thread); user mistakes become an error sentence."""
    import torch

    from ..core.progress import Cancelled
    from ..core.segment import segment

    try:
        segmentation = segment(
            case, card, device=device, progress=progress, should_cancel=should_cancel
        )
    except Cancelled:
        return _Outcome(case=case, card=card, cancelled=True)
    except (MemoryError, torch.OutOfMemoryError):
        return _Outcome(case=case, card=card, error=(
            f"Segmenting {case.name} ran out of memory on {device or 'the default device'}; "
            "choose another device or a card with a smaller inference roi_size."
        ))
    except (ValueError, OSError) as err:
        return _Outcome(case=case, card=card, error=str(err) or type(err).__name__)
    return _Outcome(case=case, card=card, segmentation=segmentation)


class _ProgressRelay(QObject):
    """Carries ``(done, total)`` from the worker thread to the main thread."""

    advanced = Signal(int, int)


class SegmentWidget(QWidget):
    """Choose a case's image layers, a model card and a device; Run segments in the background."""

    def __init__(self, viewer: "napari.viewer.Viewer", parent: Optional[QWidget] = None):
        super().__init__(parent)
        # Heavy imports (torch, MONAI) happen here, when the widget is built, not at manifest read.
        from ..core import model_card as _model_card  # noqa: F401
        from ..core import segment as _segment  # noqa: F401

        self.viewer = viewer
        self._worker = None
        self._cancel_requested = threading.Event()
        self._napari_progress: Optional[cancelable_progress] = None
        self._checked: dict[int, bool] = {}
        self._relay = _ProgressRelay(self)
        self._relay.advanced.connect(self._on_progress)

        self.layer_list = QListWidget()
        self.layer_list.setToolTip(
            "Image layers to segment, one per modality; they are matched to the card's "
            "modalities by name."
        )
        self.card_path = QLineEdit()
        self.card_path.setPlaceholderText("model card (.yaml)")
        self.card_path.editingFinished.connect(self._describe_card)
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
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)

        card_row = QHBoxLayout()
        card_row.addWidget(self.card_path)
        card_row.addWidget(browse)
        form = QFormLayout()
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

    def set_model_card(self, path: str | Path) -> None:
        """Choose the model card at ``path`` and show what it expects."""
        self.card_path.setText(str(path))
        self._describe_card()

    def _browse_card(self) -> None:
        """Pick a model card with a file dialog."""
        start = str(Path(self.card_path.text()).parent) if self.card_path.text() else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a model card", start, "Model cards (*.yaml *.yml)"
        )
        if path:
            self.set_model_card(path)

    def _load_card(self):
        """The model card named in the path field (ValueError with a sentence when it is unusable)."""
        from ..core.model_card import load_model_card

        text = self.card_path.text().strip()
        if not text:
            raise ValueError("No model card is chosen; pick a card (.yaml) with Browse….")
        return load_model_card(Path(text).expanduser())

    def _describe_card(self) -> None:
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
        return self._worker is not None

    def run(self) -> None:
        """Segment the chosen layers with the chosen card in a worker thread."""
        if self.running:
            show_warning("A segmentation is already running; wait for it or press Cancel.")
            return
        try:
            card = self._load_card()
            case = case_from_layers(self.chosen_layers())
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        device = self.device.currentText()
        self._cancel_requested.clear()
        self._napari_progress = cancelable_progress(
            total=0, desc=f"Segmenting {case.name}", cancel_callback=self.cancel
        )
        napari_progress = self._napari_progress
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status.setText(f"Segmenting {case.name} with {card.name}…")
        self.cancel_button.setEnabled(True)

        def should_cancel() -> bool:
            return self._cancel_requested.is_set() or napari_progress.is_canceled

        worker = create_worker(
            _segment_job,
            case,
            card,
            None if device == "auto" else device,
            self._relay.advanced.emit,
            should_cancel,
            _start_thread=False,
        )
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Ask the running segmentation to stop after its current window."""
        if self.running:
            self._cancel_requested.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` on the widget's bar and on napari's activity bar."""
        total = max(int(total), 1)
        if self.progress_bar.maximum() != total:
            self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(int(done), total))
        bar = self._napari_progress
        if bar is not None:
            if bar.total != total:
                bar.total = total
            bar.update(min(int(done), total) - bar.n)

    def _on_returned(self, outcome: _Outcome) -> None:
        """Add the segmentation (main thread), or report why there is none."""
        if outcome.cancelled:
            self.status.setText("Cancelled.")
            show_info(f"Segmentation of {outcome.case.name} was cancelled.")
            return
        if outcome.error is not None:
            self.status.setText("Failed.")
            show_error(outcome.error)
            return
        self.progress_bar.setValue(self.progress_bar.maximum())
        layer = self._show_segmentation(outcome)
        seg = outcome.segmentation
        self.status.setText(f"{layer.name}: {seg.seconds:.1f} s on {seg.device}.")

    def _show_segmentation(self, outcome: _Outcome):
        """Add the labels layer, replacing this case's previous segmentation layer."""
        data, kwargs, _ = segmentation_layer_data(outcome.segmentation, outcome.case, outcome.card.path)
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

    def _on_finished(self) -> None:
        """Tidy up after the worker, whatever it ended with."""
        self._worker = None
        self.cancel_button.setEnabled(False)
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running segmentation when the widget closes."""
        self.cancel()
        super().closeEvent(event)
