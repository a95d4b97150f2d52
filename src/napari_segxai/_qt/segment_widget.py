"""The "Segment" dock widget: run a model card on a case's image layers, add its labels layer.

With an uncertainty ensemble chosen (checkpoints, flips, MC dropout), the same job also measures
where the model is unsure and adds "<case> entropy" and "<case> mutual information" beside the labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QComboBox, QFormLayout

from .._layers import Key, Role, case_metadata, layer_role, segmentation_layer_data, world_units
from .compute_widget import ComputeWidget
from .jobs import Outcome

#: The role of the uncertainty layers (not an input channel of the case, not a relevance map).

#: The uncertainty choices: none, then the core's ensembles.
UNCERTAINTY_CHOICES = ("none", "checkpoints", "flips", "dropout")

_MAPS = (  # result attribute, layer name suffix, colormap, shown at first
    ("entropy", "entropy", "inferno", True),
    ("mutual_information", "mutual information", "viridis", False),
)


class SegmentWidget(ComputeWidget):
    """Choose a case, a model card, an uncertainty ensemble and a device; Run segments in the background."""

    noun = "segmentation"
    verb = "Segmenting"
    memory_hint = "choose another device or a card with a smaller inference roi_size"

    def add_controls(self, form: QFormLayout) -> None:
        """The uncertainty ensemble: none, the recorded checkpoints, test-time flips or MC dropout."""
        self.uncertainty = QComboBox()
        self.uncertainty.addItems(UNCERTAINTY_CHOICES)
        self.uncertainty.setToolTip(
            "Where the model is unsure: per-voxel entropy and mutual information of an ensemble of predictions. "
            "checkpoints: the model's recorded training checkpoints (or nnU-Net folds); flips: test-time flips "
            "along every axis (8 runs in 3D); dropout: MC dropout, for networks with dropout layers."
        )
        form.addRow("Uncertainty", self.uncertainty)

    def chosen_layers(self) -> list[Image]:
        """The image layers that are segmented: the chosen case's, one per modality."""
        return self.case_layers()

    def job_options(self, case, card) -> dict[str, Any]:
        """The chosen ensemble; a model that cannot make it is refused before the job starts."""
        mode = self.uncertainty.currentText()
        if mode == "none":
            return {}
        if mode != "dropout":  # dropout needs the network built: it is checked in the worker, before any run
            from ..core.model.uncertainty_members import plan_members

            plan_members(case, card, mode)
        return {"uncertainty": mode}

    def job_description(self, case, card, options: dict) -> str:
        text = super().job_description(case, card, options)
        return text + (f" ({options['uncertainty']} uncertainty)" if options.get("uncertainty") else "")

    @staticmethod
    def compute(case, card, *, device=None, progress=None, should_cancel=None, uncertainty=None):
        """Segment ``case`` with ``card``, with the ``uncertainty`` ensemble's maps when one is chosen (worker thread)."""
        import dataclasses

        from ..core.model.domain import check_domain

        if uncertainty is None:
            from ..core.model.inference import segment

            seg, measured = segment(case, card, device=device, progress=progress, should_cancel=should_cancel), None
        else:
            from ..core.model.uncertainty import segment_with_uncertainty

            seg, measured = segment_with_uncertainty(case, card, uncertainty, device=device, progress=progress,
                                                     should_cancel=should_cancel)
        seg = dataclasses.replace(seg, domain=check_domain(case, card, device=device, segmentation=seg, progress=progress))
        return seg if measured is None else (seg, measured)

    def show_outcome(self, outcome: Outcome) -> None:
        """Add the labels layer (and the uncertainty layers), replacing this case's previous ones in their place."""
        seg, measured = outcome.result if isinstance(outcome.result, tuple) else (outcome.result, None)
        data, kwargs, _ = segmentation_layer_data(seg, outcome.case, outcome.card.path)
        layer = self._replace(self.viewer.add_labels, data, kwargs, Labels, Role.SEGMENTATION)
        status = f"{layer.name}: {seg.seconds:.1f} s on {seg.device}"
        if seg.outside_removed:
            status += f"; removed {seg.outside_removed} labelled voxels outside the head"
        if measured is not None:
            for attribute, suffix, colormap, visible in _MAPS:
                self._replace(self.viewer.add_image, *uncertainty_layer_data(
                    measured, attribute, suffix, colormap, visible, outcome.case), Image, Role.UNCERTAINTY,
                    below=layer)
            status += f"; {measured.describe()}, {measured.seconds:.1f} s"
        if seg.domain is not None:
            status += f"; {seg.domain.describe()}"
        self.status.setText(status + ".")

    def _replace(self, add, data, kwargs: dict, kind: type, role: str, below=None):
        """Add a layer where this case's previous one of the same name and role was (else under ``below``)."""
        index = next((i for i, old in enumerate(self.viewer.layers) if old.name == kwargs["name"]
                      and isinstance(old, kind) and layer_role(old) == role), None)
        if index is not None:
            self.viewer.layers.pop(index)
        elif below is not None:
            index = self.viewer.layers.index(below)
        layer = add(data, **kwargs)
        if index is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer), index)
        return layer


def uncertainty_layer_data(measured, attribute: str, suffix: str, colormap: str, visible: bool, case) -> tuple:
    """Image-layer data and keyword arguments of one uncertainty map, on the case's affine (0 nats transparent)."""
    volume = np.asarray(getattr(measured, attribute))
    top = min(max(float(volume.max()), 1e-3), measured.max_entropy)  # the range present: thin rims stay visible
    return volume, {
        "name": f"{case.name} {suffix}",
        "colormap": fading_colormap(colormap),
        "contrast_limits": (0.0, float(top)),
        "blending": "translucent",
        "opacity": 0.9,
        "visible": visible,
        "affine": np.asarray(measured.affine, dtype=float),
        "units": world_units(volume.ndim),
        "metadata": case_metadata(case, {Key.ROLE: Role.UNCERTAINTY}),
    }


def fading_colormap(name: str):
    """Matplotlib's ``name`` with an opacity that rises from 0: certain voxels leave the image visible below."""
    from matplotlib import colormaps
    from napari.utils.colormaps import Colormap

    colors = colormaps[name](np.linspace(0.0, 1.0, 256))
    colors[:, 3] = np.sqrt(np.linspace(0.0, 1.0, 256))
    return Colormap(colors, name=f"{name} (fading)")
