"""How relevance maps are shown: layer names, colormaps, contrast limits from percentiles, layer data."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._layers import Key, Role, case_metadata, world_units

SEPARATOR = " · "
DEFAULT_PERCENTILE = 99.0
DEFAULT_OPACITY = 0.8
#: Shown maps keep only voxels whose |relevance| reaches this percentile of the class's |relevance| inside
#: the head; the rest is transparent (the Display box's "Whole maps" shows everything).
DEFAULT_THRESHOLD = 90.0


def head_mask(case) -> np.ndarray:
    """The voxels where some input channel has signal: the complement of the core's rule for no signal."""
    from ..core.model.inference import silent_voxels

    return ~silent_voxels(np.asarray(case.channels))


def shown_maps(maps: np.ndarray, head: np.ndarray | None, threshold: float) -> np.ndarray:
    """A class's maps (C, *spatial) as shown: zero outside ``head`` and where |relevance| is below the
    ``threshold`` percentile of its |relevance| inside the head (no mask, no threshold: the maps as computed)."""
    maps = np.asarray(maps, dtype=np.float32)
    if head is None and threshold <= 0:
        return maps
    cut = class_cut(maps, head, threshold)
    return np.stack([shown_map(channel, head, cut) for channel in maps])


def _inside(head: np.ndarray | None, shape: tuple) -> np.ndarray:
    """The head mask, or every voxel when there is none (or it is on another grid)."""
    return np.ones(shape, bool) if head is None or head.shape != tuple(shape) else head


def class_cut(maps: np.ndarray, head: np.ndarray | None, threshold: float) -> float:
    """The |relevance| below which a class's voxels are hidden: the ``threshold`` percentile of its non-zero
    |relevance| inside the head, over all its maps (0: nothing hidden)."""
    if threshold <= 0:
        return 0.0
    values = np.abs(np.asarray(maps, dtype=np.float32)[:, _inside(head, maps.shape[1:])])
    values = values[values > 0]
    return float(np.percentile(values, threshold)) if values.size else 0.0


def shown_map(channel_map: np.ndarray, head: np.ndarray | None, cut: float) -> np.ndarray:
    """One channel's map as shown: zero outside ``head`` and where |relevance| is below ``cut`` (float32)."""
    shown = np.where(_inside(head, channel_map.shape), np.asarray(channel_map, dtype=np.float32), np.float32(0))
    if cut > 0:
        shown[np.abs(shown) < cut] = 0.0
    return shown


def relevance_layer_name(class_name: str, modality: str, method: str) -> str:
    """The name of one relevance layer: class, modality and method."""
    return SEPARATOR.join((class_name, modality, method))


def relevance_colormap(signed: bool):
    """A perceptual colormap whose opacity grows with |relevance|, so the image shows where relevance is small.

    Signed maps: diverging blue (negative) - transparent (zero) - red (positive), with the end colours
    of Moreland's cool-warm map; symmetric contrast limits keep zero in the middle. Unsigned maps:
    inferno, transparent at zero.
    """
    from napari.utils.colormaps import Colormap, ensure_colormap

    if signed:
        controls = np.linspace(0.0, 1.0, 9)
        strength = np.abs(controls - 0.5) * 2
        blue = np.array([0.230, 0.299, 0.754])
        red = np.array([0.706, 0.016, 0.150])
        colors = [np.append(blue if c < 0.5 else red, s ** 0.8) for c, s in zip(controls, strength)]
        return Colormap(colors=np.array(colors), controls=controls, name="segxai relevance (signed)")
    inferno = ensure_colormap("inferno")
    controls = np.linspace(0.0, 1.0, 17)
    colors = inferno.map(controls).copy()
    colors[:, 3] = np.clip(controls * 1.5, 0.0, 1.0)
    return Colormap(colors=colors, controls=controls, name="segxai relevance (unsigned)")


def magnitudes(maps: np.ndarray, limit: int = 2_000_000) -> np.ndarray:
    """Sorted |relevance| of the non-zero voxels of a class's maps (every n-th voxel beyond ``limit``), for percentiles."""
    flat = np.asarray(maps, dtype=np.float32).reshape(-1)
    if flat.size > limit:
        flat = flat[:: -(-flat.size // limit)]
    values = np.abs(flat[np.isfinite(flat)])
    return np.sort(values[values > 0])


def relevance_limits(maps: np.ndarray, percentile: float, signed: bool, *, sorted_magnitudes=None) -> tuple[float, float]:
    """Contrast limits from a percentile of |relevance| over all of a class's maps: (-v, v) signed, (0, v) else.

    One scale per class across modalities, so the modalities' maps compare at a glance. Pass
    ``sorted_magnitudes`` (from :func:`magnitudes`) to skip the sort when the percentile changes.
    """
    values = magnitudes(maps) if sorted_magnitudes is None else sorted_magnitudes
    top = float(np.percentile(values, percentile)) if values.size else 0.0
    if not top > 0:
        top = float(values[-1]) if values.size else 1.0
    return (-top, top) if signed else (0.0, top)


def strongest_layer(result) -> str:
    """The layer to show first: the explained class with the largest target, on the sequence that carries it.

    The carrier is the sequence with the largest Shapley value for the class when the result has them
    (``sequences``, as the demo and ``segxai explain`` compute), else the channel holding most of its relevance.
    """
    sizes = [int(np.count_nonzero(mask)) for mask in np.asarray(result.target.masks)]
    k = int(np.argmax(sizes)) if sizes else 0
    sequences, name = result.sequences, result.class_names[k]
    if sequences is not None and name in sequences.class_names and tuple(sequences.channel_names) == \
            tuple(result.channel_names) and np.any(sequences.values[sequences.class_names.index(name)]):
        return relevance_layer_name(name, sequences.carrier(name), result.method)
    maps = np.asarray(result.relevance[k])
    step = max(1, round((maps[0].size / 1_000_000) ** (1 / max(maps.ndim - 1, 1))))  # every step-th voxel per axis
    sample = maps[(slice(None),) + (slice(None, None, step),) * (maps.ndim - 1)]  # a full-size case: 1 s -> 0.1 s
    per_channel = np.abs(sample).reshape(len(result.channel_names), -1).sum(axis=1)
    return relevance_layer_name(result.class_names[k], result.channel_names[int(np.argmax(per_channel))], result.method)


def relevance_layer_data(result, case, *, percentile: float = DEFAULT_PERCENTILE, opacity: float = DEFAULT_OPACITY,
                         sorted_magnitudes=None, whole: bool = False) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Image layer tuples: one per explained class and input channel, on the case's affine (metadata holds the result).

    The maps are shown inside the head and above the :data:`DEFAULT_THRESHOLD` percentile, unless ``whole``.
    """
    return list(iter_relevance_layer_data(result, case, percentile=percentile, opacity=opacity,
                                          sorted_magnitudes=sorted_magnitudes, whole=whole))


def iter_relevance_layer_data(result, case, *, percentile: float = DEFAULT_PERCENTILE,
                              opacity: float = DEFAULT_OPACITY, sorted_magnitudes=None, whole: bool = False):
    """:func:`relevance_layer_data` one layer at a time, each map masked when it is reached (a full-size
    class's maps take seconds at once, which would freeze the viewer between two layers)."""
    colormap = relevance_colormap(result.signed)
    affine = np.asarray(result.affine if result.affine is not None else case.affine, dtype=float)
    head = None if whole else head_mask(case)
    for k, class_name in enumerate(result.class_names):
        maps = np.asarray(result.relevance[k], dtype=np.float32)
        cut = 0.0 if whole else class_cut(maps, head, DEFAULT_THRESHOLD)
        limits = relevance_limits(result.relevance[k], percentile, result.signed,
                                  sorted_magnitudes=None if sorted_magnitudes is None else sorted_magnitudes[k])
        for c, channel in enumerate(result.channel_names):
            volume = maps[c] if head is None and cut <= 0 else shown_map(maps[c], head, cut)
            yield (
                volume,
                {
                    "name": relevance_layer_name(class_name, channel, result.method),
                    "colormap": colormap,
                    "contrast_limits": limits,
                    "opacity": opacity,
                    "blending": "translucent",
                    "affine": affine,
                    "units": world_units(volume.ndim),
                    "metadata": case_metadata(case, {
                        Key.ROLE: Role.RELEVANCE, Key.CLASS: class_name, Key.MODALITY: channel,
                        Key.METHOD: result.method, Key.SIGNED: bool(result.signed),
                        Key.TARGET: result.target_description, Key.RESULT: result,
                    }),
                },
                "image",
            )
