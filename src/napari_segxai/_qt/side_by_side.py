"""Two groups of layers (a case and a training case) side by side in linked grid views, and the view put back after."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from napari.layers import Image, Labels

from .._layers import Key, Role, layer_case, layer_role


def grid_cells(viewer, training_names: Sequence[str], query_images: Sequence[Image]) -> Optional[list[list]]:
    """Grid cells: [query image, query labels] and [training image, training labels] (labels when there are)."""
    names = set(training_names)
    training = [layer for layer in viewer.layers if layer.name in names]
    train_image = next((layer for layer in training if isinstance(layer, Image) and layer.visible), None)
    train_image = train_image or next((layer for layer in training if isinstance(layer, Image)), None)
    train_labels = next((layer for layer in training if isinstance(layer, Labels)), None)
    if train_image is None or not query_images:
        return None
    modality = train_image.metadata.get(Key.MODALITY)
    same = [layer for layer in query_images if layer.metadata.get(Key.MODALITY) == modality]
    query_image = (same or [layer for layer in query_images if layer.visible] or list(query_images))[0]
    query = layer_case(query_image)
    query_labels = None
    for layer in reversed(list(viewer.layers)):
        meta = layer.metadata or {}
        if isinstance(layer, Labels) and meta.get(Key.CASE) == query and Key.EVIDENCE not in meta:
            query_labels = layer
            if layer_role(layer) == Role.SEGMENTATION:
                break
    if train_labels is not None and query_labels is not None:
        return [[query_image, query_labels], [train_image, train_labels]]
    return [[query_image], [train_image]]


def overlap(first: list, second: list) -> bool:
    """Whether the world bounding boxes of two groups of layers intersect (on their common trailing axes)."""
    def box(layers):
        extents = [np.asarray(layer.extent.world, dtype=float) for layer in layers]
        ndim = min(e.shape[1] for e in extents)
        stacked = np.stack([e[:, -ndim:] for e in extents])
        return stacked[:, 0].min(0), stacked[:, 1].max(0)

    (low_a, high_a), (low_b, high_b) = box(first), box(second)
    n = min(len(low_a), len(low_b))
    return bool(np.all(low_a[-n:] <= high_b[-n:]) and np.all(low_b[-n:] <= high_a[-n:]))


class SideBySide:
    """Shows grid cells of layers in linked views, remembering the viewer's layer order, visibility and grid."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.apart = False                 # the second cell lies elsewhere in world space: shown alone
        self._saved: Optional[dict] = None

    def save(self) -> None:
        """Remember which layers are visible and the grid settings, to restore when side by side ends."""
        if self._saved is None:
            grid = self.viewer.canvas.grid
            self._saved = {"visible": {id(layer): layer.visible for layer in self.viewer.layers},
                           "stride": grid.stride, "enabled": grid.enabled}

    def show(self, cells: list[list]) -> None:
        """The cells' layers first and alone visible, one cell per grid view."""
        self.save()
        grid = self.viewer.canvas.grid
        # Grid views share one camera: a training case lying elsewhere in world space (a case in scanner
        # coordinates, the training cases in template space) would fall outside its view, so it is shown alone.
        self.apart = not overlap(cells[0], cells[1])
        shown = cells[1] if self.apart else [layer for cell in cells for layer in cell]
        for position, layer in enumerate(shown):
            self.viewer.layers.move(self.viewer.layers.index(layer), position)
        for layer in self.viewer.layers:
            layer.visible = any(layer is s for s in shown)
        grid.stride = len(cells[0])
        grid.enabled = not self.apart
        self.viewer.reset_view()

    def restore(self) -> None:
        """Put back the layer order, visibility and grid of before (layers added since then stay, hidden)."""
        if self._saved is None:
            return
        grid = self.viewer.canvas.grid
        saved = self._saved["visible"]
        for layer in self.viewer.layers:
            layer.visible = saved.get(id(layer), False)
        rank = {key: position for position, key in enumerate(saved)}
        order = sorted(self.viewer.layers, key=lambda layer: rank.get(id(layer), len(rank)))
        for position, layer in enumerate(order):
            self.viewer.layers.move(self.viewer.layers.index(layer), position)
        grid.stride = self._saved["stride"]
        grid.enabled = self._saved["enabled"]
        self._saved = None
