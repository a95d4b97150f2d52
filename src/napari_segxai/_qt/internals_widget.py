"""The "Network internals" dock widget: a layer's feature maps and filters on the case, a maximised input, a surrogate.

Choosing a card fills the layer list from the network's layer tree (output shapes on one window of
zeros). Run computes, in the background with progress and Cancel: the chosen layer's most
class-specific channels as one image layer on the case's grid and affine (channels on a slider, in
the order of the ranking shown below); optionally its filters as pictures (the first layer's kernels per sequence,
or a deeper layer's strongest input patches on the case and over training cases); optionally the input that maximises a class's region logit
(one image layer per sequence); optionally a surrogate's labels and its rules and fidelity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QBoxLayout, QCheckBox, QComboBox, QFormLayout, QPlainTextEdit, QSpinBox

from .._layers import Key, Role, card_classes, case_metadata, contrast_limits, label_display, world_units
from .compute_widget import ComputeWidget
from .filters_view import FiltersView, filter_pictures
from .jobs import Outcome

NONE = "none"
#: The share of the progress bar each part of a job takes (feature maps, training patches, maximisation, surrogate).
PART = 1000


class InternalsWidget(ComputeWidget):
    """Pick a layer of the model's network: its feature maps, a maximised class input and a surrogate on the case."""

    noun = "look inside the network"
    verb = "Looking inside the network on"
    memory_hint = "choose a layer with fewer channels or keep fewer channels"

    def add_controls(self, form: QFormLayout) -> None:
        """Layer, channels kept, class to maximise and its start, surrogate."""
        self.layer = QComboBox()
        self.layer.setToolTip("A layer of the network (its output: channels x shape on one window). Its feature maps "
                              "are computed window by window and put on the case's grid.")
        form.addRow("Layer", self.layer)
        self.keep = QSpinBox()
        self.keep.setRange(1, 256)
        self.keep.setValue(8)
        self.keep.setToolTip("Channels shown (on the layer's slider), the most class-specific first: mean activation "
                             "inside the predicted class vs the rest of the head, in units of the channel's spread.")
        form.addRow("Channels", self.keep)
        self.filters = QCheckBox("show the layer's filters")
        self.filters.setToolTip("The first convolution: its 3D kernels per input sequence. A deeper layer: the input "
                                "patches its three most class-specific channels respond to most on the case.")
        form.addRow("Filters", self.filters)
        self.training = QSpinBox()
        self.training.setRange(0, 64)
        self.training.setSpecialValueText("0 (off)")
        self.training.setToolTip("With Filters on a deeper layer: also search this many training cases of the model's "
                                 "training record for the strongest patches (one sliding pass each, about 40 s on a "
                                 "full-size case).")
        form.addRow("Training cases", self.training)
        self.training.setEnabled(False)
        self.filters.toggled.connect(self.training.setEnabled)
        self.maximise = QComboBox()
        self.maximise.setToolTip("Optimise an input volume to maximise this class's region logit (the relevance "
                                 "target), with total variation, blurring, jitter and bounded intensities.")
        form.addRow("Maximise", self.maximise)
        self.start_from = QComboBox()
        self.start_from.addItems(["case", "neutral"])
        self.start_from.setToolTip("Start the maximisation from the case, or from a neutral brain of its shape "
                                   "(each sequence flat at its median).")
        form.addRow("Start from", self.start_from)
        self.concepts = QComboBox()
        self.concepts.setToolTip("Concept relevance: how much of this class's LRP relevance (its region logit) passes "
                                 "through each channel of the layer, on one window around the class.")
        form.addRow("Relevance for", self.concepts)
        self.surrogate = QComboBox()
        self.surrogate.addItems([NONE, "tree", "linear"])
        self.surrogate.setToolTip("Fit a depth-3 decision tree or a sparse linear model on per-voxel features to "
                                  "mimic the network's labels; its fidelity says whether its rules describe the network.")
        form.addRow("Surrogate", self.surrogate)

    def add_results(self, layout: QBoxLayout) -> None:
        """The channel ranking, the maximisation's numbers and the surrogate's rules, as text."""
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details.setPlaceholderText("The channels, most class-specific first, appear here after Run.")
        layout.addWidget(self.details, 1)
        self.filter_view = FiltersView()
        layout.addWidget(self.filter_view, 2)

    def card_cleared(self) -> None:
        self.layer.clear()
        self.maximise.clear()
        self.concepts.clear()

    def card_chosen(self, card) -> str:
        """Fill the layers from the network's layer tree and the classes from the card."""
        from ..core.internals.layers import feature_layers
        from ..core.internals.outputs import card_layer_tree
        from ..core.model.card import build_network

        classes = [c.name for c in card.classes if c.label != 0 or card.activation != "softmax"]
        self.maximise.addItems([NONE] + classes)
        self.concepts.addItems([NONE] + classes)
        try:
            tree = feature_layers(card_layer_tree(card, build_network(card, "cpu")), len(card.roi_size))
        except (ValueError, RuntimeError) as err:
            return f"{card.name}: its layers cannot be traced ({err})"
        for info in tree:
            self.layer.addItem(info.describe().strip(), info.name)
        return super().card_chosen(card) + f"; {len(tree)} layers with feature maps"

    def job_options(self, case, card) -> dict[str, Any]:
        """The chosen layer, channels, class and surrogate (a ValueError when no layer can be chosen)."""
        layer = self.layer.currentData()
        if not layer:
            raise ValueError("No layer is chosen; pick a model whose network's layers can be traced.")
        chosen = self.maximise.currentText()
        surrogate = self.surrogate.currentText()
        concept = self.concepts.currentText()
        return {"layer": layer, "keep": self.keep.value(), "filters": self.filters.isChecked(),
                "training": self.training.value(), "maximise": None if chosen in (NONE, "") else chosen,
                "concept": None if concept in (NONE, "") else concept,
                "start": self.start_from.currentText(), "surrogate": None if surrogate == NONE else surrogate}

    def job_description(self, case, card, options: dict) -> str:
        return super().job_description(case, card, options) + f" ({options['layer']})"

    @staticmethod
    def compute(case, card, *, layer, keep, filters=False, training=0, maximise=None, start="case", surrogate=None, concept=None, device=None,
                progress=None, should_cancel=None):
        """Feature maps of ``layer``, then the filters, maximised input, surrogate and concept relevance asked for (worker)."""
        from ..core.internals.case_maximise import maximise_case
        from ..core.internals.case_surrogate import case_surrogate
        from ..core.internals.features import feature_maps
        from ..core.model.card import build_network
        from ..core.model.device import pick_device

        searched = bool(filters and training)
        parts = 1 + searched + (maximise is not None) + (surrogate is not None)
        device = pick_device(device)
        network = build_network(card, device)
        maps = feature_maps(case, card, layer, network=network, device=device, keep=keep,
                            progress=_part(progress, 0, parts), should_cancel=should_cancel)
        pictures = None if not filters else filter_pictures(
            case, card, network, maps, training=training, device=device, progress=_part(progress, 1, parts),
            should_cancel=should_cancel)
        maximised = None if maximise is None else maximise_case(
            case, card, class_name=maximise, start=start, network=network, device=device,
            progress=_part(progress, 1 + searched, parts), should_cancel=should_cancel)
        fitted = None if surrogate is None else case_surrogate(
            case, card, kind=surrogate, network=network, device=device, progress=_part(progress, parts - 1, parts),
            should_cancel=should_cancel)
        concepts = None
        if concept is not None:
            from ..core.internals.concepts import case_channel_relevance

            concepts = case_channel_relevance(case, card, layer, concept, network=network, device=device,
                                              should_cancel=should_cancel)
        return maps, pictures, maximised, fitted, concepts

    def show_outcome(self, outcome: Outcome) -> None:
        """Add the feature maps (and maximised input, surrogate labels) on the case's affine; show the numbers."""
        maps, pictures, maximised, fitted, concepts = outcome.result
        case, card = outcome.case, outcome.card
        meta = case_metadata(case, {Key.ROLE: Role.INTERNALS})
        volume_affine = _with_channel_axis(maps.affine)
        self._replace(self.viewer.add_image, maps.maps, {
            "name": f"{case.name} {maps.layer} features", "colormap": "magma", "blending": "additive",
            "contrast_limits": contrast_limits(maps.maps), "affine": volume_affine, "units": world_units(4),
            "metadata": meta})
        lines = [maps.describe(), *(f"note: {n}" for n in maps.notes), "", "slider  channel  class  specificity"]
        for slot, row in enumerate(maps.stats.rows(len(maps.channels))):
            lines.append(f"{slot:>6}  {row['channel']:>7}  {row['class'] or '-'}  "
                         f"{'-' if row['specificity'] is None else format(row['specificity'], '.2f')}")
        if concepts is not None:
            slots = {c: i for i, c in enumerate(maps.channels)}
            lines += ["", f"Relevance of {concepts.class_name} through {maps.layer} (LRP):", "channel  share  slider"]
            lines += [f"{r['channel']:>7}  {100 * r['share']:>4.0f}%  {slots.get(r['channel'], '-')}"
                      for r in concepts.rows(8)]
        if maximised is not None:
            for i, sequence in enumerate(maximised.channel_names):
                volume = maximised.volume[i]
                self._replace(self.viewer.add_image, volume, {
                    "name": f"{case.name} maximised {maximised.result.objective.split(':')[0]} {sequence}",
                    "colormap": "gray", "contrast_limits": contrast_limits(volume), "affine": maximised.affine,
                    "units": world_units(3), "visible": i == len(maximised.channel_names) - 1, "metadata": meta})
            lines += ["", f"Maximised {maximised.result.describe()}"]
        if fitted is not None:
            self._replace(self.viewer.add_labels, fitted.labels, {
                "name": f"{case.name} surrogate ({fitted.surrogate.kind})", "affine": fitted.affine,
                "units": world_units(3), "opacity": 0.5, "metadata": meta,
                **label_display(card_classes(card.classes))})
            lines += ["", fitted.surrogate.describe(), fitted.surrogate.rules()]
        self.details.setPlainText("\n".join(lines))
        self.filter_view.show_pictures(pictures)
        note = f" {pictures.note}" if pictures is not None and pictures.note else ""
        self.status.setText(f"{maps.layer}: {len(maps.channels)} of {maps.n_channels} channels on the slider, "
                            f"most class-specific first ({maps.seconds:.1f} s).{note}")

    def _replace(self, add, data, kwargs: dict):
        """Add a layer, replacing this widget's earlier one of the same name in its place."""
        index = next((i for i, old in enumerate(self.viewer.layers) if old.name == kwargs["name"]
                      and (old.metadata or {}).get(Key.ROLE) == Role.INTERNALS), None)
        if index is not None:
            self.viewer.layers.pop(index)
        layer = add(data, **kwargs)
        if index is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer), index)
        return layer


def _with_channel_axis(affine: np.ndarray) -> np.ndarray:
    """A 3D voxel-to-world affine (4 x 4) for a (channel, x, y, z) layer: the channel axis left as it is."""
    out = np.eye(5)
    out[1:, 1:] = np.asarray(affine, dtype=float)
    return out


def _part(progress, index: int, parts: int):
    """The progress callback of part ``index`` of ``parts``: its steps within its share of the bar."""
    if progress is None:
        return None
    return lambda done, total: progress(index * PART + int(PART * done / max(total, 1)), parts * PART)
