"""The base of the dock widgets that run a core job: the case, the model card, the device, Run / Cancel / progress.

A dock widget is one subclass (see segment_widget.py, the smallest). It may override:

- :meth:`add_controls` to add its own rows to the form (between the model card and the device),
- :meth:`add_results` to add what goes below the status line (a chart, a table),
- :meth:`job_options` to read its controls into keyword arguments for :meth:`compute` (main thread;
  a ``ValueError`` becomes a notification and no job starts),
- :meth:`compute`, the core call that runs in a worker thread (``progress`` and ``should_cancel``
  come from the Cancel button and the progress bar; it must not touch any widget),
- :meth:`show_outcome`, which adds the result's layers or charts on the main thread.

One job runs at a time; Cancel, closing the widget and napari's activity bar stop it. A widget
without a case, card or device of its own sets ``has_case``, ``has_card`` or ``has_device`` to
False and still gets the same Run panel and job runner.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .._layers import Key, Role, case_from_layers, layer_case, layer_role
from .jobs import JobRunner, Outcome

if TYPE_CHECKING:
    import napari

DEVICES = ("auto", "cpu", "cuda", "mps")


class ComputeWidget(QWidget):
    """A dock widget that computes on a case with a model card, one background job at a time."""

    noun = "job"               # one job in messages: "A segmentation is already running"
    verb = "Computing"         # the job's description: "<verb> <case> with <card>"
    memory_hint = "choose another device"   # what to try when a job runs out of memory
    run_text = "Run"
    has_case = True            # a Case box: image layers grouped by their case
    has_card = True            # a Model card field with Browse…
    has_device = True          # a Device box; compute() then gets ``device=``

    _trusted_card: Optional[Path] = None   # a card the user trusts although it does not say 'trusted: true'

    # Unquoted on purpose: napari passes the viewer to a dock widget whose annotation reads
    # exactly "napari.viewer.Viewer", and a quoted one would read "'napari.viewer.Viewer'".
    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer = viewer
        if self.has_card:
            # Heavy imports (torch, MONAI) happen here, when the widget is built, not at manifest read.
            from ..core.model import card as _card  # noqa: F401
            from ..core.model import inference as _inference  # noqa: F401

        self.form = QFormLayout()
        if self.has_case:
            self.case_choice = QComboBox()
            self.case_choice.setToolTip("The case: its image layers (one per modality) are the model's input.")
            self.case_choice.currentIndexChanged.connect(self._case_changed)
            self.form.addRow("Case", self.case_choice)
        if self.has_card:
            self._add_card_rows()
        self.add_controls(self.form)
        if self.has_device:
            self.device = QComboBox()
            self.device.addItems(DEVICES)
            self.device.setToolTip("auto: CUDA, then MPS, then CPU")
            self.form.addRow("Device", self.device)

        self.run_button = QPushButton(self.run_text)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.buttons = QHBoxLayout()   # subclasses may add buttons after Run and Cancel
        self.buttons.addWidget(self.run_button)
        self.buttons.addWidget(self.cancel_button)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self, self.progress_bar, self.status, self.cancel_button, noun=self.noun)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addLayout(self.buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        self.add_results(layout)

        if self.has_card:
            self._card_changed()
        if self.has_case:
            for event in self._layer_events():
                event.connect(self._refresh_cases)
            self._refresh_cases()

    # ------------------------------------------------------------------ what a subclass adds

    def add_controls(self, form: QFormLayout) -> None:
        """Add the widget's own rows to ``form`` (after the model card, before the device)."""

    def add_results(self, layout: QBoxLayout) -> None:
        """Add what goes below the status line; by default nothing (the dock's space stays at the bottom)."""
        layout.addStretch(1)

    def runners(self) -> list[JobRunner]:
        """The widget's workers, all stopped when its window closes (a subclass may run a second one)."""
        return [self.jobs]

    def job_options(self, case, card) -> dict[str, Any]:
        """Keyword arguments for :meth:`compute`, read from the controls (ValueError with a sentence if incomplete)."""
        return {}

    @staticmethod
    def compute(case, card, *, progress=None, should_cancel=None, **options) -> Any:
        """The core call, in a worker thread; its return value becomes ``Outcome.result``."""
        raise NotImplementedError

    def show_outcome(self, outcome: Outcome) -> None:
        """Show a job's result (main thread): add layers, fill tables, draw charts, say what was done."""
        raise NotImplementedError

    def job_description(self, case, card, options: dict) -> str:
        """What the job does, for the progress bar and the messages."""
        text = self.verb
        if case is not None:
            text += f" {case.name}"
        if card is not None:
            text += f" with {card.name}"
        return text

    def refuse(self, error: Exception) -> None:
        """Say why Run cannot start (a user's mistake)."""
        show_error(str(error))

    def card_chosen(self, card) -> str:
        """What the card line says about a usable card; subclasses also fill their class lists here."""
        return f"{card.name}: {', '.join(card.modalities)} → {', '.join(card.class_names)}"

    def card_cleared(self) -> None:
        """Forget what the last card filled in (a new card is being read)."""

    def layers_changed(self, inserted: Any) -> None:
        """After the case list followed the viewer's layers (``inserted``: the new layer, if one was added)."""

    def case_changed(self) -> None:
        """After another case was chosen (and the card followed it)."""

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return self.jobs.running

    def run(self) -> None:
        """Read the card, the case and the controls, then compute in a worker thread (one job at a time)."""
        if self.jobs.refuse_if_running():
            return
        try:
            card = self.load_card() if self.has_card else None
            case = self.chosen_case() if self.has_case else None
            if case is not None and card is not None:
                from ..core.model.preprocess import channel_indices

                channel_indices(case, card)  # a missing modality is said before any work starts
            options = self.job_options(case, card)
        except (ValueError, OSError) as err:
            self.refuse(err)
            return
        if self.has_device:
            options = {"device": self.chosen_device(), **options}
        self.start(case, card, options)

    def start(self, case, card, options: dict) -> None:
        """Run :meth:`compute` with ``options`` in a worker; :meth:`show_outcome` gets its result."""
        self.jobs.start(partial(self.compute, case, card, **options), case, card,
                        description=self.job_description(case, card, options), memory_hint=self.memory_hint,
                        on_result=self.show_outcome)

    def cancel(self) -> None:
        """Ask the running job to stop at its next step."""
        self.jobs.cancel()

    def chosen_device(self) -> Optional[str]:
        """The chosen device, None for auto."""
        text = self.device.currentText()
        return None if text == "auto" else text

    # ------------------------------------------------------------------ the case

    def accepts_case_layer(self, layer) -> bool:
        """Whether ``layer`` can be a channel of a case: an image layer, not RGB, not a derived map."""
        return isinstance(layer, Image) and not layer.rgb and layer_role(layer) == Role.IMAGE

    def cases(self) -> dict[str, list[Image]]:
        """Image layers grouped by case (the reader's ``Key.CASE``; a layer without one is its own case)."""
        groups: dict[str, list[Image]] = {}
        for layer in self.viewer.layers:
            if self.accepts_case_layer(layer):
                groups.setdefault(layer_case(layer), []).append(layer)
        return groups

    def case_layers(self) -> list[Image]:
        """The image layers of the chosen case."""
        return self.cases().get(self.case_choice.currentText(), [])

    def chosen_case(self):
        """The chosen case as a core Case (ValueError with a sentence when its layers cannot be one)."""
        return case_from_layers(self.case_layers())

    def _layer_events(self) -> tuple:
        events = self.viewer.layers.events
        return (events.inserted, events.removed, events.moved)

    def _refresh_cases(self, event: Any = None) -> None:
        """Update the case list; a newly opened case becomes the choice and brings the card it suggests."""
        inserted = getattr(event, "value", None) if event is not None and event.type == "inserted" else None
        cases = list(self.cases())
        current = self.case_choice.currentText()
        newest = layer_case(inserted) if inserted is not None and self.accepts_case_layer(inserted) else None
        self.case_choice.blockSignals(True)
        self.case_choice.clear()
        self.case_choice.addItems(cases)
        chosen = newest if newest in cases else current if current in cases else (cases[-1] if cases else "")
        self.case_choice.setCurrentText(chosen)
        self.case_choice.blockSignals(False)
        suggested = (inserted.metadata or {}).get(Key.SUGGESTED_CARD) if newest is not None else None
        if suggested and self.has_card:  # a case that names its model (the demo sample) brings it along
            self.set_model_card(suggested)
        self.layers_changed(inserted)
        segmentation_added = isinstance(inserted, Labels) and layer_role(inserted) == Role.SEGMENTATION
        if (self.case_choice.currentText() != current or segmentation_added
                or (self.has_card and not self.card_path.text())):
            self._case_changed()

    def _case_changed(self, *_: Any) -> None:
        if self.has_card:
            self._follow_case_card()
        self.case_changed()

    # ------------------------------------------------------------------ the model card

    def _add_card_rows(self) -> None:
        self.card_path = QLineEdit()
        self.card_path.setPlaceholderText("model card (.yaml) or nnU-Net model folder")
        self.card_path.editingFinished.connect(self._card_changed)
        browse = QPushButton("Browse…")
        browse.setToolTip("Choose a model card (.yaml)")
        browse.clicked.connect(self._browse_card)
        folder = QPushButton("Folder…")
        folder.setToolTip("Choose an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_N)")
        folder.clicked.connect(self._browse_model_folder)
        self.card_info = QLabel()
        self.card_info.setWordWrap(True)
        # a wrapped label in a form row is given one line's height; spanning the row with a minimum
        # vertical policy lets it take the lines it needs
        self.card_info.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        row = QHBoxLayout()
        row.addWidget(self.card_path)
        row.addWidget(browse)
        row.addWidget(folder)
        self.form.addRow("Model", row)
        self.form.addRow(self.card_info)

    def set_model_card(self, path: str | Path, *, trusted: bool = False) -> None:
        """Choose the model card at ``path`` and show what the widget says about it.

        ``trusted`` (``segxai demo --trust-model``) lets this card's pickled weights be fully unpickled, as
        'trusted: true' in the card would; it holds for this path only, until another card is chosen as trusted.
        """
        if trusted:
            self._trusted_card = Path(path).expanduser().resolve()
        self.card_path.setText(str(path))
        self._card_changed()

    def load_card(self):
        """The model card named in the path field (ValueError with a sentence when it is unusable)."""
        from ..core.model.loading import load_model_card

        text = self.card_path.text().strip()
        if not text:
            raise ValueError("No model is chosen; pick a card (.yaml) with Browse… or a model folder with Folder….")
        path = Path(text).expanduser()
        return load_model_card(path, trusted=self._trusted_card is not None and path.resolve() == self._trusted_card)

    def _card_changed(self) -> None:
        """Say what the chosen card expects and predicts, or why it cannot be used."""
        self.card_cleared()
        if not self.card_path.text().strip():
            self.card_info.setText("No model card chosen.")
            return
        try:
            card = self.load_card()
        except (ValueError, OSError) as err:
            self.card_info.setText(str(err))
            return
        self.card_info.setText(self.card_chosen(card))

    def _browse_card(self) -> None:
        """Pick a model card with a file dialog."""
        start = str(Path(self.card_path.text()).parent) if self.card_path.text() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model card", start, "Model cards (*.yaml *.yml)")
        if path:
            self.set_model_card(path)

    def _browse_model_folder(self) -> None:
        """Pick a model folder (nnU-Net v2) with a folder dialog."""
        start = str(Path(self.card_path.text()).parent) if self.card_path.text() else ""
        path = QFileDialog.getExistingDirectory(self, "Choose an nnU-Net model folder", start)
        if path:
            self.set_model_card(path)

    def _follow_case_card(self) -> None:
        """Take the card of the chosen case's segmentation, else keep the field, else the bundled demo card."""
        card = self._segmentation_card(self.case_choice.currentText())
        if card is None and not self.card_path.text().strip():
            from ..core.io.paths import demo_model_card_path

            default = demo_model_card_path()
            card = str(default) if default.is_file() else None
        if card is not None and card != self.card_path.text():
            self.set_model_card(card)

    def _segmentation_card(self, case_name: str) -> Optional[str]:
        """The model card of the case's last segmentation layer, if any."""
        for layer in reversed(list(self.viewer.layers)):
            meta = layer.metadata or {}
            if layer_role(layer) == Role.SEGMENTATION and meta.get(Key.CASE) == case_name and meta.get(Key.MODEL_CARD):
                return str(meta[Key.MODEL_CARD])
        return None

    def showEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Once shown in its dock: join a tab when the window would outgrow the screen; stop jobs when it closes."""
        super().showEvent(event)
        from qtpy.QtCore import QTimer

        from .dock_fit import fit_to_screen

        QTimer.singleShot(0, lambda: fit_to_screen(self))
        window = self.window()
        if window is not self and not getattr(self, "_watching_close", False):
            window.installEventFilter(self)
            self._watching_close = True

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
        """When the viewer's window closes, stop this widget's job first: a worker outliving its widgets crashes Qt."""
        from qtpy.QtCore import QEvent

        if event.type() == QEvent.Type.Close:
            for jobs in self.runners():
                jobs.shutdown()
        return False

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop the running job and stop following the viewer's layers when the widget closes."""
        for jobs in self.runners():
            jobs.shutdown()
        if self.has_case:
            for signal in self._layer_events():
                signal.disconnect(self._refresh_cases)
        super().closeEvent(event)
