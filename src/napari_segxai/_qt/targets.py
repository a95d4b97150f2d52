"""What an explanation explains, read from layers: a painted or drawn region, a clicked point, or the predicted region.

The Explain widget publishes what it will explain next (an :class:`ExplainChoice`) in the metadata
of its case's image layers (``Key.EXPLAIN_CHOICE``); the Trust widget reads it back from there and
turns it into the same target with :func:`target_arguments`. Neither reaches into the other.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Optional

import numpy as np
from napari.layers import Shapes

from .._layers import Key, layer_world_affine

# (shown text, kind): what the Explain widget's maps explain
TARGETS = (("predicted region", "predicted"), ("painted region", "region"), ("clicked point", "voxel"),
           ("uncertain voxels", "uncertain"))


@dataclasses.dataclass(frozen=True)
class ExplainChoice:
    """What the Explain widget explains next: its method and target, with the layers the target comes from."""

    method: str
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "predicted"                     # one of TARGETS' kinds
    confident: bool = False                     # predicted: only voxels above ``threshold``
    threshold: float = 0.5                      # uncertain: the entropy (nats) above which a voxel is uncertain
    region_layer: str = ""                      # region: the labels or shapes layer
    point_layer: str = ""                       # voxel: the points layer ("" = the last click)
    point: Optional[tuple[float, ...]] = None   # voxel: world coordinates (mm) of the last click


def publish(choice: Optional[ExplainChoice], layers: Iterable) -> None:
    """Record ``choice`` on ``layers`` (a case's image layers); None withdraws it."""
    for layer in layers:
        if choice is None:
            layer.metadata.pop(Key.EXPLAIN_CHOICE, None)
        else:
            layer.metadata[Key.EXPLAIN_CHOICE] = choice


def published(layers: Iterable) -> Optional[ExplainChoice]:
    """The choice an Explain widget recorded on ``layers``, if any."""
    for layer in layers:
        choice = (layer.metadata or {}).get(Key.EXPLAIN_CHOICE)
        if isinstance(choice, ExplainChoice):
            return choice
    return None


def target_arguments(viewer, case, choice: ExplainChoice) -> dict:
    """explain_case's target arguments for ``case`` from a choice and the viewer's layers (ValueError when incomplete)."""
    if choice.kind == "predicted":
        return {"target": "predicted", "confident": choice.confident, "threshold": float(choice.threshold)}
    if choice.kind == "region":
        return {"target": "region", "region": layer_region(viewer, choice.region_layer, case)}
    if choice.kind == "uncertain":
        return {"target": "region", "region": uncertain_voxels(viewer, case, float(choice.threshold))}
    if choice.point_layer and choice.point_layer in viewer.layers:
        points = viewer.layers[choice.point_layer]
        if len(points.data) == 0:
            raise ValueError(f"The points layer {choice.point_layer!r} has no point; add one where to explain.")
        world = np.asarray(points.data_to_world(points.data[-1]), dtype=float)
    elif choice.point is not None:
        world = np.asarray(choice.point, dtype=float)
    else:
        raise ValueError("No point is chosen; click on the image (with 'clicked point' as target) first.")
    world = world[-len(case.shape):]
    voxel = np.linalg.solve(case.affine, np.append(world, 1.0))[: len(case.shape)]
    if np.any(voxel < -0.5) or np.any(voxel > np.array(case.shape) - 0.5):
        raise ValueError("The chosen point lies outside the case's image; click inside it.")
    return {"target": "voxel", "voxel": tuple(float(v) for v in voxel)}


def uncertain_voxels(viewer, case, threshold: float) -> np.ndarray:
    """The voxels of ``case`` whose entropy (its "<case> entropy" layer, from Segment's Uncertainty) exceeds ``threshold``."""
    from .._layers import Role, layer_role

    name = f"{case.name} entropy"
    if name not in viewer.layers or layer_role(viewer.layers[name]) != Role.UNCERTAINTY:
        raise ValueError(f"There is no entropy layer of {case.name}; segment it with an Uncertainty (flips, checkpoints "
                         "or dropout) in the Segment widget first.")
    entropy = np.asarray(viewer.layers[name].data)
    if entropy.shape != tuple(case.shape):
        raise ValueError(f"The layer {name!r} is not on the grid of {case.name}; segment the case again.")
    region = entropy > threshold
    if not region.any():
        raise ValueError(f"No voxel of {name!r} has an entropy above {threshold:g} nats (the highest is "
                         f"{float(entropy.max()):.3f}); lower the threshold.")
    return region


def layer_region(viewer, name: str, case) -> np.ndarray:
    """The region a labels layer (its non-zero voxels) or a shapes layer (inside its shapes) marks on the case's grid."""
    if not name or name not in viewer.layers:
        raise ValueError("No labels or shapes layer to take the region from; paint or draw one first.")
    layer = viewer.layers[name]
    if isinstance(layer, Shapes):
        region = shapes_region(layer, case.shape, case.affine)
        if not region.any():
            raise ValueError(f"The shapes of layer {name!r} cover no voxel of the case; draw them over the "
                             "case's image.")
        return region
    region = np.asarray(layer.data) > 0
    if region.shape != case.shape or not np.allclose(layer_world_affine(layer), case.affine, atol=1e-4):
        raise ValueError(f"The labels layer {name!r} is not on the case's grid; paint the region on a labels "
                         "layer made for this case (same shape and position).")
    if not region.any():
        raise ValueError(f"The labels layer {name!r} is empty; paint the region to explain first.")
    return region


def shapes_region(layer: Shapes, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The voxels of a grid (``shape``, voxel -> world ``affine``) enclosed by the shapes of a shapes layer.

    Each shape is carried from the layer's data coordinates through world coordinates onto the
    grid, so a layer drawn with another scale or affine than the case's images still lands where
    it was drawn; napari's ``to_masks`` then rasterises it in the slice of the grid it lies in.
    """
    ndim = len(shape)
    if layer.ndim != ndim:
        raise ValueError(f"The shapes layer {layer.name!r} has {layer.ndim} dimensions but the case has {ndim}; "
                         f"draw the region on a new shapes layer over the case's image.")
    if len(layer.data) == 0:
        raise ValueError(f"The shapes layer {layer.name!r} has no shape; draw the region to explain first.")
    to_grid = np.linalg.solve(np.asarray(affine, dtype=float), layer_world_affine(layer))
    by_order: dict[tuple[int, ...], tuple[list, list]] = {}
    for vertices, kind in zip(layer.data, layer.shape_type):
        points = np.asarray(vertices, dtype=float) @ to_grid[:ndim, :ndim].T + to_grid[:ndim, ndim]
        flat = [a for a in range(ndim) if np.ptp(points[:, a]) < 1e-3]
        if len(flat) < ndim - 2:
            raise ValueError(f"A shape of layer {layer.name!r} does not lie in one slice of the case's grid (the layer "
                             "is rotated against the case); draw it in a 2D view on a shapes layer over the case.")
        sliced = flat[: ndim - 2]
        if any(not -0.5 <= points[0, a] < shape[a] - 0.5 for a in sliced):
            continue  # drawn on a slice outside the case
        # napari rasterises a shape in its last two axes, at the slice its other axes give
        order = tuple(sliced + [a for a in range(ndim) if a not in sliced])
        group = by_order.setdefault(order, ([], []))
        group[0].append(points[:, order])
        group[1].append(kind)
    region = np.zeros(shape, dtype=bool)
    for order, (data, kinds) in by_order.items():
        masks = Shapes(data, shape_type=kinds, ndim=ndim).to_masks(tuple(shape[a] for a in order))
        region |= np.transpose(masks.any(0), np.argsort(order))
    return region
