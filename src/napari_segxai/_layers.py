"""Cases and segmentations as napari layer data, and back: the one place both directions live.

Every layer of a case carries the case's voxel-to-world affine (``affine=``), so images, labels
and later relevance maps overlay in world (mm) coordinates whatever the file's orientation.
Layer metadata names the case (:attr:`Key.CASE`), the files it came from (:attr:`Key.SOURCE_PATHS`,
which the writer refuses to overwrite), the affine, the layer's :class:`Role` and, for images, the
modality. The widgets find each other's results through these keys, never through each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class Key:
    """The layer metadata keys SegXAI reads and writes."""

    CASE = "segxai_case"                      # the case a layer belongs to
    ROLE = "segxai_role"                      # what the layer holds: one of :class:`Role`
    SOURCE_PATHS = "source_paths"             # the case's files (never overwritten)
    REFERENCE_FILES = "segxai_reference_files"  # DICOM files of the series whose grid the case is on
    AFFINE = "affine"                         # the case's voxel-to-world matrix
    MODALITY = "segxai_modality"              # the input channel an image or relevance layer shows
    MODEL_CARD = "segxai_model_card"          # the card a segmentation was made with
    SUGGESTED_CARD = "segxai_suggested_card"  # a card a case brings along (the demo sample)
    RESULT = "segxai_result"                  # the core result a layer shows (a Relevance)
    CLASS = "segxai_class"                    # the explained class of a relevance layer
    METHOD = "segxai_method"                  # the attribution method of a relevance layer
    SIGNED = "segxai_signed"                  # whether a relevance layer is signed
    TARGET = "segxai_target"                  # what a relevance layer explains, in words
    EXPLAIN_CHOICE = "segxai_explain_choice"  # what an Explain widget explains next (targets.ExplainChoice)
    EVIDENCE = "segxai_evidence"              # a training case opened as evidence: the query and the score
    REGION = "segxai_region"                  # the region a RoI highlight shows
    RESULT_ID = "segxai_result_id"            # id() of the result a RoI highlight belongs to


class Role:
    """The values of :attr:`Key.ROLE`."""

    IMAGE = "image"                  # one input channel of a case
    REFERENCE = "reference"          # the case's own (ground-truth) labels
    SEGMENTATION = "segmentation"    # a model's labels
    RELEVANCE = "relevance"          # one class and channel of a relevance map
    ROI_HIGHLIGHT = "roi highlight"  # one region shown from the RoI importance chart
    UNCERTAINTY = "uncertainty"      # a model's per-voxel uncertainty (entropy, mutual information)
    INTERNALS = "internals"          # what the network computes inside (feature maps, maximised inputs, surrogate)


def layer_role(layer) -> str:
    """A layer's role; a layer without one is taken for an image."""
    return str((layer.metadata or {}).get(Key.ROLE, Role.IMAGE))


def layer_case(layer) -> str:
    """The case a layer belongs to; a layer without one is a case of its own, named after the layer."""
    return str((layer.metadata or {}).get(Key.CASE) or layer.name)

# Distinct colours for label values without a colour of their own (Trubetskoy's 20 colours,
# in order); the demo cards use the first three for necrosis, oedema, enhancing tumour.
CLASS_PALETTE: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
    "#808000", "#ffd8b1", "#000075", "#808080",
)

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def world_units(ndim: int) -> tuple[str, ...]:
    """Units of the world axes: NIfTI affines map voxels to millimetres."""
    return ("mm",) * int(ndim)


def case_metadata(case, extra: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """The metadata every layer of ``case`` carries, plus ``extra`` (keys from :class:`Key`)."""
    meta = {
        Key.CASE: case.name,
        Key.SOURCE_PATHS: [str(p) for p in case.source_paths],
        Key.REFERENCE_FILES: [str(p) for p in case.reference_files],
        Key.AFFINE: np.asarray(case.affine, dtype=float).copy(),
    }
    meta.update(extra or {})
    meta.update(more)
    return meta


def contrast_limits(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Display range from percentiles of the non-zero voxels (all voxels when none is non-zero)."""
    finite = volume[np.isfinite(volume)]
    values = finite[finite != 0] if np.any(finite != 0) else finite
    if values.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def label_display(classes: Mapping[int, tuple[str, str | None]]) -> dict[str, Any]:
    """Labels-layer keyword arguments (direct colormap, class-name features) for label -> (name, colour)."""
    colors: dict[Any, Any] = {None: TRANSPARENT, 0: TRANSPARENT}
    foreground = sorted(v for v in classes if v != 0)
    for rank, value in enumerate(foreground):
        name, color = classes[value]
        colors[int(value)] = color or CLASS_PALETTE[rank % len(CLASS_PALETTE)]
    index = sorted(int(v) for v in classes)
    if 0 not in index:
        index = [0, *index]
    names = [classes[v][0] if v in classes else "background" for v in index]
    return {"colormap": colors, "features": {"index": index, "class": names}}


def scheme_classes(label_scheme) -> dict[int, tuple[str, str | None]]:
    """Label value -> (class name, no colour) from a case's label scheme."""
    return {int(v): (str(name), None) for v, name in label_scheme.classes.items()}


def card_classes(classes: Iterable) -> dict[int, tuple[str, str | None]]:
    """Label value -> (class name, colour) from a model card's classes."""
    return {int(c.label): (str(c.name), c.color) for c in classes}


def case_layer_data(case, visible_modality: str | None = None) -> list[tuple]:
    """One image layer per modality and, when the case has one, a labels layer for its reference label."""
    shown = visible_modality if visible_modality in case.modalities else case.modalities[0]
    layers: list[tuple] = []
    for index, modality in enumerate(case.modalities):
        volume = np.asarray(case.channels[index])
        layers.append((
            volume,
            {
                "name": modality,
                "colormap": "gray",
                "contrast_limits": contrast_limits(volume),
                "blending": "translucent",
                "visible": modality == shown,
                "affine": np.asarray(case.affine, dtype=float),
                "units": world_units(volume.ndim),
                "metadata": case_metadata(case, {Key.MODALITY: modality, Key.ROLE: Role.IMAGE}),
            },
            "image",
        ))
    if case.label is not None:
        kwargs: dict[str, Any] = {
            "name": f"{case.name} reference",
            "opacity": 0.5,
            "affine": np.asarray(case.affine, dtype=float),
            "units": world_units(case.label.ndim),
            "metadata": case_metadata(case, {Key.ROLE: Role.REFERENCE}),
        }
        if case.label_scheme is not None:
            kwargs.update(label_display(scheme_classes(case.label_scheme)))
        layers.append((np.asarray(case.label), kwargs, "labels"))
    return layers


def segmentation_layer_data(segmentation, case, card_path: str | Path | None = None) -> tuple:
    """A labels layer for a model's segmentation of ``case``, with the card's class names and colours."""
    kwargs: dict[str, Any] = {
        "name": segmentation_layer_name(case.name),
        "opacity": 0.5,
        "affine": np.asarray(segmentation.affine, dtype=float),
        "units": world_units(np.ndim(segmentation.labels)),
        "metadata": case_metadata(
            case, {Key.ROLE: Role.SEGMENTATION, Key.MODEL_CARD: None if card_path is None else str(card_path)},
        ),
    }
    kwargs.update(label_display(card_classes(segmentation.classes)))
    return (np.asarray(segmentation.labels), kwargs, "labels")


def segmentation_layer_name(case_name: str) -> str:
    """The name of the labels layer holding a model's segmentation of a case."""
    return f"{case_name} segmentation"


def world_affine(state: Mapping[str, Any], ndim: int) -> np.ndarray:
    """The (ndim+1)-square data-to-world matrix of a layer from its state (scale, translate, rotate, shear, affine)."""
    from napari.utils.transforms import Affine, CompositeAffine

    physical = CompositeAffine(
        scale=state.get("scale", np.ones(ndim)),
        translate=state.get("translate", np.zeros(ndim)),
        rotate=state.get("rotate", np.eye(ndim)),
        shear=state.get("shear", np.zeros(ndim * (ndim - 1) // 2)),
        ndim=ndim,
    )
    affine = state.get("affine")
    if affine is None:
        affine = np.eye(ndim + 1)
    if isinstance(affine, Affine):
        affine = affine.affine_matrix
    world = Affine(affine_matrix=np.asarray(affine, dtype=float), ndim=ndim)
    return np.asarray(world.affine_matrix @ physical.affine_matrix, dtype=float)


def layer_modality(layer) -> str:
    """The modality an image layer holds: from its metadata, else from its name."""
    from .core.naming import normalize_modality

    modality = (layer.metadata or {}).get(Key.MODALITY)
    return str(modality) if modality else normalize_modality(layer.name)


def layer_world_affine(layer) -> np.ndarray:
    """The data-to-world matrix of a napari layer (its scale, translate, rotate, shear and affine)."""
    return world_affine(
        {
            "scale": layer.scale, "translate": layer.translate,
            "rotate": layer.rotate, "shear": layer.shear, "affine": layer.affine,
        },
        layer.ndim,
    )


def case_from_layers(layers: Sequence) -> "Any":
    """A Case built from image layers (their data and world affines), one channel per layer."""
    from .core.case import Case

    if not layers:
        raise ValueError("No image layers were chosen; tick the case's image layers first.")
    shapes = {tuple(layer.data.shape) for layer in layers}
    if len(shapes) != 1 or len(next(iter(shapes))) != layers[0].ndim or layers[0].rgb:
        described = ", ".join(f"{layer.name} {tuple(layer.data.shape)}" for layer in layers)
        raise ValueError(
            f"The chosen image layers must be single-channel volumes of one shape; got {described}."
        )
    affines = [layer_world_affine(layer) for layer in layers]
    for layer, affine in zip(layers[1:], affines[1:]):
        if not np.allclose(affine, affines[0], atol=1e-4):
            raise ValueError(
                f"Layers {layers[0].name!r} and {layer.name!r} are not on one grid (their affines "
                "differ); choose layers of one case."
            )
    modalities = tuple(layer_modality(layer) for layer in layers)
    if len(set(modalities)) != len(modalities):
        raise ValueError(
            f"The chosen layers repeat a modality ({', '.join(modalities)}); choose one layer per modality."
        )
    name = layer_case(layers[0])
    sources: list[Path] = []
    for layer in layers:
        for p in (layer.metadata or {}).get(Key.SOURCE_PATHS, []):
            if Path(p) not in sources:
                sources.append(Path(p))
    channels = np.stack([np.asarray(layer.data, dtype=np.float32) for layer in layers])
    reference = (layers[0].metadata or {}).get(Key.REFERENCE_FILES, [])
    return Case(
        channels=channels,
        modalities=modalities,
        affine=affines[0],
        label=None,
        label_scheme=None,
        source_paths=tuple(sources),
        name=name,
        reference_files=tuple(Path(p) for p in reference),
    )
