"""The "Training evidence" dock widget: TracIn proponents and opponents of a case's class, as clickable thumbnails."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import case_from_layers, case_layer_data, card_classes, label_display, layer_world_affine
from .evidence_strip import EvidenceStrip
from .card_choice import CardChoice
from .jobs import JobRunner, Outcome

if TYPE_CHECKING:
    import napari

ANY_CLASS = "any class"
DEFAULT_TOP = 6
DEVICES = ("auto", "cpu", "cuda", "mps")
EVIDENCE_KEY = "segxai_evidence"   # layer metadata of an opened training case: the query and the evidence


class EvidenceWidget(CardChoice, QWidget):
    """Choose a case, a model card and a class; Run ranks the training cases; a thumbnail click opens one."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        # Heavy imports (torch, MONAI) happen here, when the widget is built, not at manifest read.
        from ..core.influence import ENGINES, LAYER_CHOICES

        self.viewer = viewer
        self.last: Optional[Outcome] = None       # the last query: case, card, InfluenceResult
        self.opened: Optional[dict] = None        # the training case opened last: evidence and layer names
        self._thumbnails = None                   # the worker drawing thumbnails
        self._generation = 0                      # thumbnails of an older ranking are dropped
        self._side_saved: Optional[dict] = None
        self.apart = False                        # the opened training case lies elsewhere in world space

        # --- what to rank
        self.case_choice = QComboBox()
        self.case_choice.setToolTip("The case: its image layers (one per modality) are the model's input.")
        self.case_choice.currentIndexChanged.connect(self._case_changed)
        self.card_path = QLineEdit()
        self.card_path.setPlaceholderText("model card (.yaml)")
        self.card_path.editingFinished.connect(self._card_changed)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_card)
        self.card_info = QLabel()
        self.card_info.setWordWrap(True)
        self.test_class = QComboBox()
        self.test_class.setToolTip("The class of this case whose training evidence is shown (its predicted region).")
        self.train_class = QComboBox()
        self.train_class.setToolTip("Rank only this class's regions of the training cases, or the regions of any class.")
        self.top = QSpinBox()
        self.top.setRange(1, 50)
        self.top.setValue(DEFAULT_TOP)
        self.top.setToolTip("How many proponents and how many opponents to show.")
        for control in (self.test_class, self.train_class):
            control.currentIndexChanged.connect(self._rank)
        self.top.valueChanged.connect(self._rank)
        self.layers = QComboBox()
        self.layers.addItems(list(LAYER_CHOICES))
        self.layers.setCurrentText("last")
        self.layers.setToolTip("Layers whose gradients count: all parameters, the last layers, or the final layer only.")
        self.engine = QComboBox()
        self.engine.addItems(list(ENGINES))
        self.engine.setToolTip(
            "indexed: training gradients stored once beside the checkpoints (the first query builds the index); "
            "exact: recomputed for every query."
        )
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setToolTip("Device: auto takes CUDA, then MPS, then CPU.")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.jobs = JobRunner(self, self.progress_bar, self.status, self.cancel_button, noun="TracIn query")

        # --- results
        self.proponents = EvidenceStrip("proponents")
        self.opponents = EvidenceStrip("opponents")
        for strip in (self.proponents, self.opponents):
            strip.chosen.connect(self.open_training_case)
        self.side_button = QPushButton("Side by side")
        self.side_button.setCheckable(True)
        self.side_button.setToolTip("The case and the training case opened last in two linked views (grid mode).")
        self.side_button.toggled.connect(self.set_side_by_side)

        card_row = QHBoxLayout()
        card_row.addWidget(self.card_path)
        card_row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Case", self.case_choice)
        form.addRow("Model card", card_row)
        form.addRow("", self.card_info)
        form.addRow("Class", self.test_class)
        form.addRow("Training class", self.train_class)
        form.addRow("Show top", self.top)
        gradients = QHBoxLayout()
        for control in (self.layers, self.engine, self.device):
            gradients.addWidget(control)
        form.addRow("Gradients", gradients)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addWidget(QLabel("<b>Proponents</b> (training regions that taught the model this)"))
        layout.addWidget(self.proponents)
        layout.addWidget(QLabel("<b>Opponents</b> (training regions that pulled the other way)"))
        layout.addWidget(self.opponents)
        layout.addWidget(self.side_button)
        layout.addStretch(1)

        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ the case and its card

    def cases(self) -> dict[str, list[Image]]:
        """Image layers grouped by case (the reader's ``segxai_case``); training cases opened from here excluded."""
        groups: dict[str, list[Image]] = {}
        for layer in self.viewer.layers:
            if not isinstance(layer, Image) or layer.rgb:
                continue
            meta = layer.metadata or {}
            if meta.get("segxai_role", "image") != "image" or EVIDENCE_KEY in meta:
                continue
            groups.setdefault(str(meta.get("segxai_case") or layer.name), []).append(layer)
        return groups

    def case_layers(self) -> list[Image]:
        """The image layers of the chosen case."""
        return self.cases().get(self.case_choice.currentText(), [])

    def _refresh_layers(self, event: Any = None) -> None:
        """Update the case list; a newly opened case becomes the choice."""
        inserted = getattr(event, "value", None) if event is not None and event.type == "inserted" else None
        cases = list(self.cases())
        current = self.case_choice.currentText()
        newest = None
        if isinstance(inserted, Image) and EVIDENCE_KEY not in (inserted.metadata or {}):
            newest = (inserted.metadata or {}).get("segxai_case") or inserted.name
        self.case_choice.blockSignals(True)
        self.case_choice.clear()
        self.case_choice.addItems(cases)
        chosen = newest if newest in cases else current if current in cases else (cases[-1] if cases else "")
        self.case_choice.setCurrentText(chosen)
        self.case_choice.blockSignals(False)
        segmentation_added = (isinstance(inserted, Labels)
                              and (inserted.metadata or {}).get("segxai_role") == "segmentation")
        if chosen != current or segmentation_added or not self.card_path.text():
            self._case_changed()

    def _card_changed(self) -> None:
        """List the card's classes; say in the widget when the card has no training record."""
        from ..core.influence import NoTrainingRecord, training_record

        for box in (self.test_class, self.train_class):
            box.blockSignals(True)
            box.clear()
        try:
            if not self.card_path.text().strip():
                self.card_info.setText("No model card chosen.")
                return
            try:
                card = self._load_card()
            except (ValueError, OSError) as err:
                self.card_info.setText(str(err))
                return
            if self.last is not None and self.last.card.path != card.path:
                self.last = None  # a ranking by another model
                self.proponents.show_evidence([])
                self.opponents.show_evidence([])
            names = [c.name for c in card.classes if c.label != 0] or list(card.class_names)
            self.test_class.addItems(names)
            self.train_class.addItems([ANY_CLASS, *names])
            try:
                record = training_record(card)
            except NoTrainingRecord as err:
                text = str(err)
            except (ValueError, OSError, KeyError) as err:
                text = f"The training record of {card.name} cannot be read: {err}"
            else:
                text = f"{card.name}: {len(record.seeds)} training cases, {len(record.checkpoints)} checkpoints."
            self.card_info.setText(text)
        finally:
            for box in (self.test_class, self.train_class):
                box.blockSignals(False)
        self._rank()

    # ------------------------------------------------------------------ running the query

    @property
    def running(self) -> bool:
        """Whether a query (or the opening of a training case) is in progress."""
        return self.jobs.running

    def run(self) -> None:
        """Rank the training cases for every class of the chosen case, in a worker thread."""
        from ..core.influence import NoTrainingRecord, training_record
        from ..core.segment import channel_indices

        if self.jobs.refuse_if_running():
            return
        try:
            card = self._load_card()
            training_record(card)
            case = case_from_layers(self.case_layers())
            channel_indices(case, card)
        except NoTrainingRecord as err:
            self.status.setText(str(err))
            show_warning(str(err))
            return
        except (ValueError, OSError) as err:
            show_error(str(err))
            return
        from ..core.influence import influence

        device = self.device.currentText()
        self.jobs.start(
            partial(influence, case, card, engine=self.engine.currentText(), layers=self.layers.currentText(),
                    device=None if device == "auto" else device),
            case, card, verb="Ranking the training cases for",
            memory_hint="choose the last layers or the final layer, or another device",
            description=f"TracIn of {case.name} with {card.name}", on_result=self._on_result,
        )

    def cancel(self) -> None:
        """Ask the running query to stop at its next step, and stop drawing thumbnails."""
        self.jobs.cancel()
        self._stop_thumbnails()

    def _on_result(self, outcome: Outcome) -> None:
        """Keep the query's result and show its proponents and opponents (main thread)."""
        self.last = outcome
        self._rank()

    def _rank(self, *_: Any) -> None:
        """Show the proponents and opponents of the chosen class pair from the last query; draw their thumbnails."""
        if self.last is None:
            return
        result = self.last.result
        test_class = self.test_class.currentText()
        train_class = None if self.train_class.currentText() in ("", ANY_CLASS) else self.train_class.currentText()
        if test_class not in result.test_classes or (train_class is not None and train_class not in result.train_classes):
            self.proponents.show_evidence([])
            self.opponents.show_evidence([])
            return
        top = self.top.value()
        self.proponents.show_evidence(result.proponents(test_class, train_class, top=top))
        self.opponents.show_evidence(result.opponents(test_class, train_class, top=top))
        if self.proponents.count() or self.opponents.count():
            self.status.setText(result.describe())
        else:
            a = result.test_classes.index(test_class)
            why = (f"{self.last.case.name} has no confident {test_class} region"
                   if result.test_voxels[a] == 0 else "no training region of that class scored")
            self.status.setText(f"No proponents or opponents: {why}.")
        self._draw_thumbnails()

    # ------------------------------------------------------------------ thumbnails

    def _draw_thumbnails(self) -> None:
        """Draw the shown thumbnails in a worker thread, each put in place as soon as it is ready."""
        self._stop_thumbnails()
        self._generation += 1
        jobs = [(strip, row, strip.evidence(row)) for strip in (self.proponents, self.opponents)
                for row in range(strip.count())]
        if not jobs:
            return
        worker = create_worker(
            _thumbnails, self.last.card, [(k, evidence) for k, (_, _, evidence) in enumerate(jobs)],
            self.proponents.thumbnail_size, _start_thread=False,
        )
        generation = self._generation
        worker.yielded.connect(lambda item: self._put_thumbnail(generation, jobs, item))
        worker.errored.connect(lambda err: self._thumbnail_error(generation, err))
        worker.finished.connect(lambda: self._thumbnails_finished(worker))
        self._thumbnails = worker
        worker.start()

    def _put_thumbnail(self, generation: int, jobs: list, item: tuple) -> None:
        """Put one drawn thumbnail in its strip, unless a newer ranking replaced the strips."""
        if generation != self._generation:
            return
        k, image = item
        strip, row, _ = jobs[k]
        if not _alive(strip):  # the viewer closed (the widget went with it) while thumbnails were drawn
            self._stop_thumbnails()
            return
        strip.set_thumbnail(row, image)

    def _thumbnail_error(self, generation: int, err: BaseException) -> None:
        """Say why thumbnails could not be drawn (they stay grey; the ranking is still valid)."""
        if generation == self._generation:
            show_error(f"Thumbnails could not be drawn: {err}")

    def _thumbnails_finished(self, worker) -> None:
        if self._thumbnails is worker:
            self._thumbnails = None

    @property
    def drawing(self) -> bool:
        """Whether thumbnails are still being drawn."""
        return self._thumbnails is not None

    def _stop_thumbnails(self) -> None:
        """Stop drawing thumbnails of an older ranking."""
        if self._thumbnails is not None:
            self._thumbnails.quit()
            self._thumbnails = None

    # ------------------------------------------------------------------ opening a training case

    def open_training_case(self, evidence) -> None:
        """Open the training case of ``evidence`` (regenerated, cached) beside the current case, in a worker."""
        from ..core.influence import training_case

        if self.jobs.refuse_if_running():
            return
        card = self.last.card if self.last is not None else None
        if card is None:
            try:
                card = self._load_card()
            except (ValueError, OSError) as err:
                show_error(str(err))
                return
        shown = self._evidence_layers(evidence.training_case)
        if shown:
            self._show_beside(evidence, shown)
            return
        pending = SimpleNamespace(name=evidence.training_case)
        self.jobs.start(
            lambda progress=None, should_cancel=None: training_case(card, evidence.seed),
            pending, card, verb="Opening", memory_hint="close other layers first",
            description=f"Opening training case {evidence.training_case}",
            on_result=lambda outcome: self._add_training_case(evidence, outcome),
        )

    def _evidence_layers(self, case_name: str) -> list:
        """Layers of a training case opened from here earlier."""
        return [layer for layer in self.viewer.layers
                if EVIDENCE_KEY in (layer.metadata or {}) and layer.metadata.get("segxai_case") == case_name]

    def _add_training_case(self, evidence, outcome: Outcome) -> None:
        """Add the training case's layers (names prefixed with its id, its own affine, the card's colours)."""
        case, card = outcome.result, outcome.card
        query = self.last.case.name if self.last is not None else self.case_choice.currentText()
        note = {"query_case": query, "seed": int(evidence.seed), "train_class": str(evidence.train_class),
                "score": float(evidence.score), "centroid": [int(v) for v in evidence.centroid]}
        self._save_view()
        added = []
        for data, kwargs, kind in case_layer_data(case, visible_modality="flair"):
            kwargs = dict(kwargs)
            kwargs["metadata"] = {**kwargs["metadata"], EVIDENCE_KEY: note}
            if kind == "image":
                kwargs["name"] = f"{case.name} {kwargs['name']}"
            elif set(np.unique(data).tolist()) <= set(card.label_values) | {0}:
                kwargs.update(label_display(card_classes(card.classes)))
            added.append(getattr(self.viewer, f"add_{kind}")(data, **kwargs))
        self._show_beside(evidence, added)

    def _show_beside(self, evidence, layers: list) -> None:
        """Show the training case beside the current case (grid mode) at its influential region."""
        self.opened = {"evidence": evidence, "layers": [layer.name for layer in layers]}
        self.set_side_by_side(True)
        world = self._world_point(evidence, layers)
        if world is not None and len(world) <= self.viewer.dims.ndim:
            offset = self.viewer.dims.ndim - len(world)
            for axis, value in enumerate(world):
                self.viewer.dims.set_point(offset + axis, float(value))
        where = (f"alone (its world coordinates do not overlap {self._query_name()}'s; Side by side off shows "
                 "the case again)" if self.apart else f"beside {self._query_name()}")
        self.status.setText(
            f"Opened {evidence.training_case} ({evidence.train_class}, score {evidence.score:+.3g}) {where}; "
            f"the slice goes through its {evidence.train_class} region."
        )

    @staticmethod
    def _world_point(evidence, layers: list) -> Optional[np.ndarray]:
        """World coordinates (mm) of the evidence's region centre, from the training case's layers."""
        for layer in layers:
            if isinstance(layer, Image):
                affine = layer_world_affine(layer)
                voxel = np.append(np.asarray(evidence.centroid, dtype=float), 1.0)
                if len(voxel) == affine.shape[0]:
                    return (affine @ voxel)[:-1]
        return None

    def _query_name(self) -> str:
        return self.last.case.name if self.last is not None else self.case_choice.currentText()

    # ------------------------------------------------------------------ side by side

    def _cells(self) -> Optional[list[list]]:
        """Grid cells: [query image, query labels] and [training image, training labels] (labels when there are)."""
        if self.opened is None:
            return None
        names = set(self.opened["layers"])
        training = [layer for layer in self.viewer.layers if layer.name in names]
        train_image = next((layer for layer in training if isinstance(layer, Image) and layer.visible), None)
        train_image = train_image or next((layer for layer in training if isinstance(layer, Image)), None)
        train_labels = next((layer for layer in training if isinstance(layer, Labels)), None)
        query = self._query_name()
        query_images = self.cases().get(query, [])
        if train_image is None or not query_images:
            return None
        modality = (train_image.metadata or {}).get("segxai_modality")
        same = [layer for layer in query_images if (layer.metadata or {}).get("segxai_modality") == modality]
        query_image = (same or [layer for layer in query_images if layer.visible] or query_images)[0]
        query_labels = None
        for layer in reversed(list(self.viewer.layers)):
            meta = layer.metadata or {}
            if isinstance(layer, Labels) and meta.get("segxai_case") == query and EVIDENCE_KEY not in meta:
                query_labels = layer
                if meta.get("segxai_role") == "segmentation":
                    break
        if train_labels is not None and query_labels is not None:
            return [[query_image, query_labels], [train_image, train_labels]]
        return [[query_image], [train_image]]

    def set_side_by_side(self, enabled: bool) -> None:
        """Show the case and the opened training case in two linked grid views (or restore the view)."""
        grid = self.viewer.canvas.grid
        cells = self._cells() if enabled else None
        if not enabled or cells is None:
            if self._side_saved is not None:
                saved = self._side_saved["visible"]
                for layer in self.viewer.layers:  # training cases opened since then stay in the list, hidden
                    layer.visible = saved.get(id(layer), False)
                rank = {key: position for position, key in enumerate(saved)}
                order = sorted(self.viewer.layers, key=lambda layer: rank.get(id(layer), len(rank)))
                for position, layer in enumerate(order):
                    self.viewer.layers.move(self.viewer.layers.index(layer), position)
                grid.stride = self._side_saved["stride"]
                grid.enabled = self._side_saved["enabled"]
                self._side_saved = None
            if enabled:
                show_warning("Open a training case first (click a thumbnail), with the case's image layers in the viewer.")
            self._check_side_button(False)
            return
        self._save_view()
        # Grid views share one camera: a training case lying elsewhere in world space (a case in scanner
        # coordinates, the training cases in template space) would fall outside its view, so it is shown alone.
        self.apart = not _overlap(cells[0], cells[1])
        shown = cells[1] if self.apart else [layer for cell in cells for layer in cell]
        for position, layer in enumerate(shown):
            self.viewer.layers.move(self.viewer.layers.index(layer), position)
        for layer in self.viewer.layers:
            layer.visible = any(layer is s for s in shown)
        grid.stride = len(cells[0])
        grid.enabled = not self.apart
        self.viewer.reset_view()
        self._check_side_button(True)

    def _save_view(self) -> None:
        """Remember which layers are visible and the grid settings, to restore when side by side ends."""
        if self._side_saved is None:
            grid = self.viewer.canvas.grid
            self._side_saved = {"visible": {id(layer): layer.visible for layer in self.viewer.layers},
                                "stride": grid.stride, "enabled": grid.enabled}

    def _check_side_button(self, checked: bool) -> None:
        if self.side_button.isChecked() != checked:
            self.side_button.blockSignals(True)
            self.side_button.setChecked(checked)
            self.side_button.blockSignals(False)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop a running query and the thumbnail drawing when the widget closes."""
        self.cancel()
        super().closeEvent(event)


def _alive(widget) -> bool:
    """Whether the Qt object behind ``widget`` still exists (any binding raises RuntimeError once it is deleted)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def _overlap(first: list, second: list) -> bool:
    """Whether the world bounding boxes of two groups of layers intersect (on their common trailing axes)."""
    def box(layers):
        extents = [np.asarray(layer.extent.world, dtype=float) for layer in layers]
        ndim = min(e.shape[1] for e in extents)
        stacked = np.stack([e[:, -ndim:] for e in extents])
        return stacked[:, 0].min(0), stacked[:, 1].max(0)

    (low_a, high_a), (low_b, high_b) = box(first), box(second)
    n = min(len(low_a), len(low_b))
    return bool(np.all(low_a[-n:] <= high_b[-n:]) and np.all(low_b[-n:] <= high_a[-n:]))


def _thumbnails(card, items: list[tuple[int, Any]], size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(key, picture) for each (key, Evidence): its training case through its region, card colours, its class thicker.

    Each training case is regenerated (or read from the cache) once, however many of its regions are shown.
    """
    from ..core.influence import training_case
    from ..core.thumbnails import class_label, thumbnail

    by_seed: dict[int, list[tuple[int, Any]]] = {}
    for key, evidence in items:
        by_seed.setdefault(int(evidence.seed), []).append((key, evidence))
    for seed, group in by_seed.items():
        case = training_case(card, seed)
        for key, evidence in group:
            yield key, thumbnail(case, case.label, evidence.centroid, size=size, colors=card.classes,
                                 highlight=class_label(card.classes, evidence.train_class))
