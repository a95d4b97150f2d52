"""The "Training evidence" dock widget: TracIn proponents and opponents of a case's class, as clickable thumbnails."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import QBoxLayout, QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox

from .._layers import Key, card_classes, case_layer_data, label_display, layer_world_affine
from .compute_widget import ComputeWidget
from .controls import check_quietly
from .evidence_strip import EvidenceStrip, draw_thumbnails
from .jobs import Outcome
from .side_by_side import SideBySide, grid_cells

ANY_CLASS = "any class"
DEFAULT_TOP = 6
UNCERTAIN_NATS = 0.5  # "only where the model is unsure": entropy above this (core.model.uncertainty.DEFAULT_THRESHOLD)
EVIDENCE_KEY = Key.EVIDENCE   # layer metadata of an opened training case: the query and the evidence


class EvidenceWidget(ComputeWidget):
    """Choose a case, a model card and a class; Run ranks the training cases; a thumbnail click opens one."""

    noun = "TracIn query"
    memory_hint = "choose the last layers or the final layer, or another device"

    last: Optional[Outcome] = None       # the last query: case, card, InfluenceResult
    opened: Optional[dict] = None        # the training case opened last: evidence and layer names
    _thumbnails = None                   # the worker drawing thumbnails
    _generation = 0                      # thumbnails of an older ranking are dropped

    def add_controls(self, form: QFormLayout) -> None:
        """The class pair to rank, how many to show, and whose gradients count."""
        # Heavy imports (torch, MONAI) happen here, when the widget is built, not at manifest read.
        from ..core.influence import ENGINES, LAYER_CHOICES
        from ..core.influence.gradients import DEFAULT_LAYERS
        from ..core.influence.scoring import DEFAULT_SCORING, EXACT_DEFAULT_SCORING, SCORINGS

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
        self.layers.setCurrentText(DEFAULT_LAYERS)
        self.layers.setToolTip("Layers whose gradients count: all parameters, the last layers, or the final layer only.")
        self.engine = QComboBox()
        self.engine.addItems(list(ENGINES))
        self.engine.setToolTip(
            "indexed: training gradients stored once beside the checkpoints (the first query builds the index); "
            "exact: recomputed for every query."
        )
        self.scoring = QComboBox()
        self.scoring.addItems(list(SCORINGS))
        self.scoring.setCurrentText(DEFAULT_SCORING)
        self.scoring.setToolTip(
            "raw: TracIn as published (training regions with large gradients top every ranking); cosine: gradient "
            "similarity per checkpoint; relative: scaled by each training region's own gradient size; specific: relative, "
            "after removing what all training regions share (indexed engine only; docs/influence.md)."
        )
        self.engine.currentTextChanged.connect(lambda engine: offer_scorings(self.scoring, engine, EXACT_DEFAULT_SCORING))
        form.addRow("Class", self.test_class)
        form.addRow("Training class", self.train_class)
        form.addRow("Show top", self.top)
        gradients = QHBoxLayout()
        gradients.addWidget(self.layers)
        gradients.addWidget(self.engine)
        form.addRow("Gradients", gradients)
        form.addRow("Scores", self.scoring)
        self.uncertain = QCheckBox("only where the model is unsure")
        self.uncertain.setToolTip("Score only the part of each class region whose entropy (the case's entropy layer, "
                                  "from Segment's Uncertainty) exceeds 0.5 nats: why is the model unsure here?")
        form.addRow("", self.uncertain)

    def add_results(self, layout: QBoxLayout) -> None:
        """The proponents' and opponents' thumbnails, and Side by side."""
        self.proponents = EvidenceStrip("proponents")
        self.opponents = EvidenceStrip("opponents")
        for strip in (self.proponents, self.opponents):
            strip.chosen.connect(self.open_training_case)
        self.side_button = QPushButton("Side by side")
        self.side_button.setCheckable(True)
        self.side_button.setToolTip("The case and the training case opened last in two linked views (grid mode).")
        self.side_button.toggled.connect(self.set_side_by_side)
        self.side = SideBySide(self.viewer)
        layout.addWidget(QLabel("<b>Proponents</b> (training regions that taught the model this)"))
        layout.addWidget(self.proponents)
        layout.addWidget(QLabel("<b>Opponents</b> (training regions that pulled the other way)"))
        layout.addWidget(self.opponents)
        layout.addWidget(self.side_button)
        layout.addStretch(1)

    # ------------------------------------------------------------------ the case and its card

    def accepts_case_layer(self, layer) -> bool:
        """Image layers of a case; training cases opened from here are evidence, not cases to rank."""
        return super().accepts_case_layer(layer) and EVIDENCE_KEY not in (layer.metadata or {})

    def card_cleared(self) -> None:
        """Forget the last card's classes (and the thumbnails ranked for them)."""
        for box in (self.test_class, self.train_class):
            box.blockSignals(True)
            box.clear()
            box.blockSignals(False)
        self._rank()

    def card_chosen(self, card) -> str:
        """List the card's classes; say in the card line when the card has no training record."""
        from ..core.influence import NoTrainingRecord, training_record
        from ..core.influence.training_set import checkpoint_meaning

        if self.last is not None and self.last.card.path != card.path:
            self.last = None  # a ranking by another model
            self.proponents.show_evidence([])
            self.opponents.show_evidence([])
        names = [c.name for c in card.classes if c.label != 0] or list(card.class_names)
        for box, items in ((self.test_class, names), (self.train_class, [ANY_CLASS, *names])):
            box.blockSignals(True)
            box.addItems(items)
            box.blockSignals(False)
        try:
            record = training_record(card)
        except NoTrainingRecord as err:
            text = str(err)
        except (ValueError, OSError, KeyError) as err:
            text = f"The training record of {card.name} cannot be read: {err}"
        else:
            text = (f"{card.name}: {len(record.seeds)} training cases, {len(record.checkpoints)} checkpoint"
                    f"{'s' if len(record.checkpoints) != 1 else ''}. {checkpoint_meaning(len(record.checkpoints))}")
        self._rank()
        return text

    # ------------------------------------------------------------------ running the query

    def job_options(self, case, card) -> dict:
        """The engine and the layers whose gradients count (NoTrainingRecord when the card has no training record)."""
        from ..core.influence import training_record

        training_record(card)
        options = {"engine": self.engine.currentText(), "layers": self.layers.currentText(),
                   "scoring": self.scoring.currentText()}
        if self.uncertain.isChecked():
            from .targets import uncertain_voxels

            options["within"] = uncertain_voxels(self.viewer, case, UNCERTAIN_NATS)
        return options

    def job_description(self, case, card, options: dict) -> str:
        """TracIn of <case> with <card>."""
        return f"TracIn of {case.name} with {card.name}"

    def refuse(self, error: Exception) -> None:
        """A card without training record is said in the status line too; other mistakes as errors."""
        from ..core.influence import NoTrainingRecord

        if isinstance(error, NoTrainingRecord):
            self.status.setText(str(error))
            show_warning(str(error))
        else:
            super().refuse(error)

    @staticmethod
    def compute(case, card, *, progress=None, should_cancel=None, **options):
        """Rank the training cases for every class of the case (worker thread)."""
        from ..core.influence import influence

        return influence(case, card, progress=progress, should_cancel=should_cancel, **options)

    def cancel(self) -> None:
        """Ask the running query to stop at its next step, and stop drawing thumbnails."""
        self.jobs.cancel()
        self._stop_thumbnails()

    def show_outcome(self, outcome: Outcome) -> None:
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
            draw_thumbnails, self.last.card, [(k, evidence) for k, (_, _, evidence) in enumerate(jobs)],
            self.proponents.thumbnail_size, _start_thread=False,
        )
        generation = self._generation
        worker.yielded.connect(lambda item: self._put_thumbnail(generation, jobs, item))
        worker.errored.connect(lambda err: self._thumbnail_error(generation, err))
        worker.returned.connect(lambda note: self._no_picture(generation, note))
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

    def _no_picture(self, generation: int, note: str) -> None:
        """Say once, in the status line, why some evidence has no picture; its thumbnails are crossed out."""
        if generation == self._generation and note and all(_alive(s) for s in (self.proponents, self.opponents)):
            self.proponents.say_no_picture(note)
            self.opponents.say_no_picture(note)
            self.status.setText(f"{self.status.text()} {note}")

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
                card = self.load_card()
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
            pending, card, description=f"Opening training case {evidence.training_case}",
            memory_hint="close other layers first",
            on_result=lambda outcome: self._add_training_case(evidence, outcome),
        )

    def _evidence_layers(self, case_name: str) -> list:
        """Layers of a training case opened from here earlier."""
        return [layer for layer in self.viewer.layers
                if EVIDENCE_KEY in (layer.metadata or {}) and layer.metadata.get(Key.CASE) == case_name]

    def _add_training_case(self, evidence, outcome: Outcome) -> None:
        """Add the training case's layers (names prefixed with its id, its own affine, the card's colours)."""
        case, card = outcome.result, outcome.card
        query = self._query_name()
        note = {"query_case": query, "seed": int(evidence.seed), "train_class": str(evidence.train_class),
                "score": float(evidence.score), "centroid": [int(v) for v in evidence.centroid]}
        self.side.save()
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

    @property
    def apart(self) -> bool:
        """Whether the opened training case lies elsewhere in world space (shown alone, not beside the case)."""
        return self.side.apart

    def set_side_by_side(self, enabled: bool) -> None:
        """Show the case and the opened training case in two linked grid views (or restore the view)."""
        cells = None
        if enabled and self.opened is not None:
            cells = grid_cells(self.viewer, self.opened["layers"], self.cases().get(self._query_name(), []))
        if cells is None:
            self.side.restore()
            if enabled:
                show_warning("Open a training case first (click a thumbnail), with the case's image layers in the viewer.")
        else:
            self.side.show(cells)
        check_quietly(self.side_button, cells is not None)

def _alive(widget) -> bool:
    """Whether the Qt object behind ``widget`` still exists (any binding raises RuntimeError once it is deleted)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def offer_scorings(box: QComboBox, engine: str, fallback: str) -> None:
    """Grey out the scorings ``engine`` cannot compute (``specific`` needs the index); a greyed choice becomes ``fallback``."""
    for row in range(box.count()):
        box.model().item(row).setEnabled(not (engine == "exact" and box.itemText(row) == "specific"))
    if engine == "exact" and box.currentText() == "specific":
        box.setCurrentText(fallback)
