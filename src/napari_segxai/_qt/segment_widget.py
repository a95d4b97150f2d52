"""The "Segment" dock widget: run a model card on a case's image layers, add its labels layer."""

from __future__ import annotations

from napari.layers import Image, Labels

from .._layers import Role, layer_role, segmentation_layer_data
from .compute_widget import ComputeWidget
from .jobs import Outcome


class SegmentWidget(ComputeWidget):
    """Choose a case, a model card and a device; Run segments in the background."""

    noun = "segmentation"
    verb = "Segmenting"
    memory_hint = "choose another device or a card with a smaller inference roi_size"

    def chosen_layers(self) -> list[Image]:
        """The image layers that are segmented: the chosen case's, one per modality."""
        return self.case_layers()

    @staticmethod
    def compute(case, card, *, device=None, progress=None, should_cancel=None):
        """Segment ``case`` with ``card`` (worker thread)."""
        from ..core.model.inference import segment

        return segment(case, card, device=device, progress=progress, should_cancel=should_cancel)

    def show_outcome(self, outcome: Outcome) -> None:
        """Add the labels layer, replacing this case's previous segmentation layer in its place."""
        data, kwargs, _ = segmentation_layer_data(outcome.result, outcome.case, outcome.card.path)
        index = next((i for i, old in enumerate(self.viewer.layers) if old.name == kwargs["name"]
                      and isinstance(old, Labels) and layer_role(old) == Role.SEGMENTATION), None)
        if index is not None:
            self.viewer.layers.pop(index)
        layer = self.viewer.add_labels(data, **kwargs)
        if index is not None:
            self.viewer.layers.move(self.viewer.layers.index(layer), index)
        seg = outcome.result
        self.status.setText(f"{layer.name}: {seg.seconds:.1f} s on {seg.device}.")
