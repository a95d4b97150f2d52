"""RoI importance of one relevance result: what a worker needs read from the layers, and what it hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Optional

import numpy as np
from napari.layers import Image, Labels

from .._layers import CLASS_PALETTE, Key, Role, layer_case
from ..core import progress as _progress
from ..core.roi import RoiImportance, case_regions, roi_importance
from ..core.roi_chart import FIXED_COLORS

NO_ATLAS = "none"


@dataclass
class RoiEntry:
    """One relevance result summarised: its RoI importance, the region masks and where they came from."""

    result: Any                      # the core Relevance
    case_name: str
    importance: RoiImportance
    regions: dict[str, np.ndarray]
    affine: np.ndarray
    colors: dict[str, str]
    region_source: str
    atlas: str = NO_ATLAS

    @property
    def title(self) -> str:
        """How the result is listed: case, method and explained classes."""
        return f"{self.case_name} · {self.importance.method} · {', '.join(self.importance.class_names)}"


@dataclass(frozen=True)
class RoiRequest:
    """What a worker needs to summarise one result: arrays read from the layers on the main thread."""

    result: Any
    case_name: str
    affine: np.ndarray
    labels: np.ndarray
    classes: tuple                   # ClassInfo of the labels' classes
    colors: dict[str, str]
    images: tuple = ()               # the case's image volumes (the brain is where any is non-zero)
    atlas: Optional[np.ndarray] = None
    atlas_names: dict = field(default_factory=dict)
    atlas_layer: str = NO_ATLAS
    region_source: str = ""


def summarise(request: RoiRequest, progress=None, should_cancel=None) -> RoiEntry:
    """Regions from the request's labels (and atlas), then RoI importance of its result (worker thread)."""
    from ..core.model.card import ClassInfo

    present = set(np.unique(request.labels).tolist()) - {0} - {int(c.label) for c in request.classes}
    classes = list(request.classes) + [ClassInfo(f"label {v}", int(v), "") for v in sorted(present)]
    brain = reduce(np.logical_or, (np.asarray(image) != 0 for image in request.images)) if request.images else None
    _progress.step(0, 1, None, should_cancel)
    regions = case_regions(request.labels, classes, brain=brain, atlas=request.atlas,
                           atlas_names=request.atlas_names or None)
    importance = roi_importance(request.result, regions, progress=progress, should_cancel=should_cancel)
    colors = dict(FIXED_COLORS)
    for rank, name in enumerate(regions):
        colors.setdefault(name, request.colors.get(name) or CLASS_PALETTE[(rank + 3) % len(CLASS_PALETTE)])
    return RoiEntry(request.result, request.case_name, importance, regions, request.affine, colors,
                    request.region_source, request.atlas_layer)


def layer_classes(layer: Labels) -> tuple[tuple, dict[str, str]]:
    """ClassInfo per label value named in a labels layer's features (index, class), with its colour."""
    from matplotlib.colors import to_hex

    from ..core.model.card import ClassInfo

    names = layer_names(layer)
    classes, colors = [], {}
    for value, name in sorted(names.items()):
        color = layer.get_color(value) if value != 0 else None
        hex_color = to_hex(color, keep_alpha=False) if color is not None else ""
        classes.append(ClassInfo(name, int(value), hex_color))
        if value != 0:
            colors[name] = hex_color
    return tuple(classes), colors


def layer_names(layer: Labels) -> dict[int, str]:
    """Label value -> name from a labels layer's features (columns index and class or name), else empty."""
    features = getattr(layer, "features", None)
    if features is None or "index" not in features:
        return {}
    column = "class" if "class" in features else "name" if "name" in features else None
    if column is None:
        return {}
    return {int(v): str(n) for v, n in zip(features["index"], features[column])}


def target_labels(result) -> tuple[np.ndarray, tuple, dict[str, str]]:
    """Labels 1..K_t from the explained target regions (a later class wins where they overlap)."""
    from ..core.model.card import ClassInfo

    masks = np.asarray(result.target.masks)
    labels = np.zeros(masks.shape[1:], dtype=np.int16)
    classes = [ClassInfo("background", 0, "")]
    for k, (name, mask) in enumerate(zip(result.class_names, masks), start=1):
        labels[mask] = k
        classes.append(ClassInfo(name, k, ""))
    colors = {name: CLASS_PALETTE[k % len(CLASS_PALETTE)] for k, name in enumerate(result.class_names)}
    return labels, tuple(classes), colors


def read_request(viewer, result, layer, atlas_name: str = NO_ATLAS) -> RoiRequest:
    """Read the labels, images and atlas a result (shown by ``layer``) is summarised over from the viewer's layers.

    The regions come from the case's latest segmentation layer on the result's grid, else from the
    explained target regions; ``atlas_name`` names a labels layer whose labels are regions too.
    """
    meta = layer.metadata or {}
    case_name = layer_case(layer)
    spatial = tuple(result.relevance.shape[2:])
    affine = np.asarray(result.affine if result.affine is not None else meta.get(Key.AFFINE, np.eye(len(spatial) + 1)),
                        dtype=float)
    images = tuple(np.asarray(other.data) for other in viewer.layers
                   if isinstance(other, Image) and not other.rgb and tuple(other.data.shape) == spatial
                   and (other.metadata or {}).get(Key.ROLE) == Role.IMAGE
                   and (other.metadata or {}).get(Key.CASE) == case_name)
    segmentation = segmentation_layer(viewer, case_name, spatial)
    if segmentation is not None:
        classes, colors = layer_classes(segmentation)
        labels = np.asarray(segmentation.data)
        source = f"the segmentation layer {segmentation.name!r}"
    else:
        labels, classes, colors = target_labels(result)
        source = "the explained target regions (no segmentation layer of this case)"
    atlas, atlas_names = None, {}
    if atlas_name != NO_ATLAS and atlas_name in viewer.layers:
        atlas_layer = viewer.layers[atlas_name]
        if tuple(atlas_layer.data.shape) != spatial:
            raise ValueError(f"The atlas layer {atlas_name!r} has shape {tuple(atlas_layer.data.shape)}, not the "
                             f"case's {spatial}; choose an atlas on the case grid or none.")
        atlas, atlas_names = np.asarray(atlas_layer.data), layer_names(atlas_layer)
    return RoiRequest(result, case_name, affine, labels, classes, colors, images, atlas, atlas_names,
                      atlas_name if atlas is not None else NO_ATLAS, source)


def segmentation_layer(viewer, case_name: str, spatial: tuple) -> Optional[Labels]:
    """The case's latest segmentation layer on the result's grid."""
    for layer in reversed(list(viewer.layers)):
        meta = layer.metadata or {}
        if (isinstance(layer, Labels) and meta.get(Key.ROLE) == Role.SEGMENTATION
                and meta.get(Key.CASE) == case_name and tuple(layer.data.shape) == spatial):
            return layer
    return None
