"""Local RoI importance (Agg2Exp): how much of the relevance for a class falls in each region and modality.

For the relevance ``e`` explaining class ``a`` (all input channels, all voxels) and a region ``b``::

    e_{b->a} = ||e restricted to b||_1 / ||e||_1

split into the positive and the negative relevance in ``b`` (``importance = positive + negative``),
and the modality share ``||e_c||_1 / ||e||_1`` of each input channel ``c`` (the LRP-for-segmentation
modality relevance). A class whose relevance is zero everywhere gets zeros, never a division by zero.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from . import progress as _progress
from .io.files import write_text

if TYPE_CHECKING:
    from .attribution.base import Relevance
    from .model.card import ClassInfo

BACKGROUND = "background"
BRAIN_OUTSIDE_TUMOUR = "brain outside tumour"
ATLAS_PREFIX = "atlas:"
REGION_KIND = "region"
MODALITY_KIND = "modality"
CSV_COLUMNS = ("class", "kind", "name", "importance", "positive", "negative", "voxels", "total", "method", "target")


@dataclass(frozen=True, eq=False)
class RoiImportance:
    """Relevance shares per explained class: by region (e_{b->a}, signed split) and by input modality."""

    class_names: tuple[str, ...]        # explained classes (rows)
    region_names: tuple[str, ...]       # regions b (columns), in a stable order
    importance: np.ndarray              # (K_t, R) ||e in b||_1 / ||e||_1 (0 where ||e||_1 == 0)
    positive: np.ndarray                # (K_t, R) sum of positive relevance in b / ||e||_1
    negative: np.ndarray                # (K_t, R) sum of |negative relevance| in b / ||e||_1
    modality_names: tuple[str, ...]
    modality_share: np.ndarray          # (K_t, C) ||e_c||_1 / ||e||_1
    total: np.ndarray                   # (K_t,) ||e||_1
    region_voxels: np.ndarray           # (R,) voxel count of each region
    method: str
    target: str                         # Relevance.target_description
    modality_positive: np.ndarray | None = None   # (K_t, C) positive relevance of channel c / ||e||_1
    modality_negative: np.ndarray | None = None   # (K_t, C) |negative relevance| of channel c / ||e||_1
    modality_source: str = ""                     # what the modality shares come from: the maps, or Shapley values

    def region(self, class_name: str, region_name: str) -> float:
        """e_{b->a} of one class and region, by name."""
        return float(self.importance[_index(self.class_names, class_name, "class"),
                                     _index(self.region_names, region_name, "region")])

    def rows(self) -> list[dict]:
        """Long format: one row per class and region, then per class and modality."""
        rows = []
        for k, class_name in enumerate(self.class_names):
            common = {"total": float(self.total[k]), "method": self.method, "target": self.target}
            for r, name in enumerate(self.region_names):
                rows.append({"class": class_name, "kind": REGION_KIND, "name": name,
                             "importance": float(self.importance[k, r]), "positive": float(self.positive[k, r]),
                             "negative": float(self.negative[k, r]), "voxels": int(self.region_voxels[r]), **common})
            for c, name in enumerate(self.modality_names):
                rows.append({"class": class_name, "kind": MODALITY_KIND, "name": name,
                             "importance": float(self.modality_share[k, c]),
                             "positive": _optional(self.modality_positive, k, c),
                             "negative": _optional(self.modality_negative, k, c), "voxels": None, **common})
        return rows

    def csv_text(self) -> str:
        """:meth:`rows` as CSV text."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({key: _cell(value) for key, value in row.items()})
        return buffer.getvalue()

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`rows` as CSV (atomically) and return the path."""
        return write_text(path, self.csv_text())


def read_roi_csv(path: str | Path) -> RoiImportance:
    """An RoI importance table read back from a CSV written by :meth:`RoiImportance.to_csv`."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(CSV_COLUMNS) <= set(reader.fieldnames):
            raise ValueError(f"{path} is not an RoI importance table; it needs the columns {', '.join(CSV_COLUMNS)}.")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path} holds no RoI importance rows; write it again with RoiImportance.to_csv.")
    classes = tuple(dict.fromkeys(row["class"] for row in rows))
    regions = tuple(dict.fromkeys(row["name"] for row in rows if row["kind"] == REGION_KIND))
    modalities = tuple(dict.fromkeys(row["name"] for row in rows if row["kind"] == MODALITY_KIND))
    shape_r, shape_m = (len(classes), len(regions)), (len(classes), len(modalities))
    tables = {name: np.zeros(shape_r) for name in ("importance", "positive", "negative")}
    modality = {name: np.full(shape_m, np.nan) for name in ("importance", "positive", "negative")}
    total, voxels = np.zeros(len(classes)), np.zeros(len(regions), dtype=np.int64)
    for row in rows:
        k = classes.index(row["class"])
        total[k] = float(row["total"])
        if row["kind"] == REGION_KIND:
            r = regions.index(row["name"])
            voxels[r] = int(row["voxels"])
            for name, table in tables.items():
                table[k, r] = float(row[name])
        elif row["kind"] == MODALITY_KIND:
            c = modalities.index(row["name"])
            for name, table in modality.items():
                table[k, c] = float(row[name]) if row[name] != "" else np.nan
        else:
            raise ValueError(f"{path} has a row of unknown kind {row['kind']!r}; kinds are {REGION_KIND!r} and {MODALITY_KIND!r}.")
    signed_split = [None if np.isnan(modality[n]).any() else modality[n] for n in ("positive", "negative")]
    return RoiImportance(
        class_names=classes, region_names=regions, importance=tables["importance"], positive=tables["positive"],
        negative=tables["negative"], modality_names=modalities, modality_share=np.nan_to_num(modality["importance"]),
        total=total, region_voxels=voxels, method=rows[0]["method"], target=rows[0]["target"],
        modality_positive=signed_split[0], modality_negative=signed_split[1],
    )


def brain_mask(channels: np.ndarray) -> np.ndarray:
    """Voxels where any input channel is non-zero (skull-stripped images are zero outside the brain)."""
    channels = np.asarray(channels)
    if channels.ndim < 2:
        raise ValueError(f"Channels must be an array (C, *spatial), got shape {channels.shape}.")
    return np.any(channels != 0, axis=0)


def case_regions(
    labels: np.ndarray,
    classes: Sequence["ClassInfo"],
    *,
    brain: np.ndarray | None = None,
    channels: np.ndarray | None = None,
    atlas: np.ndarray | None = None,
    atlas_names: Mapping[int, str] | None = None,
) -> dict[str, np.ndarray]:
    """Boolean region masks on the case grid, in a stable order for any case segmented with ``classes``.

    - one region per non-background class (label != 0), named after the class (empty when not predicted);
    - ``"brain outside tumour"``: the brain minus every class region;
    - ``"background"``: label 0 outside the brain, so these regions partition the grid and a class's
      e_{b->a} over them add up to 1;
    - ``"atlas:<name>"`` per non-zero atlas label (names from ``atlas_names``, else the value), which
      overlap the regions above.

    The brain is ``brain`` when given, else the voxels where any of ``channels`` is non-zero, else the
    whole grid (then ``"background"`` is empty).
    """
    labels = np.asarray(labels)
    if labels.ndim < 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Labels must be an integer array on the case grid, got {labels.dtype} {labels.shape}.")
    tumour_classes = [c for c in classes if int(c.label) != 0]
    known = {0} | {int(c.label) for c in tumour_classes}
    unknown = sorted(set(np.unique(labels).tolist()) - known)
    if unknown:
        raise ValueError(
            f"The labels contain the value {unknown[0]}, which none of the classes "
            f"({', '.join(f'{c.name}={c.label}' for c in classes)}) writes; use the model card the segmentation came from."
        )
    if brain is not None:
        inside = _mask(brain, labels.shape, "The brain mask")
    elif channels is not None:
        inside = brain_mask(channels)
        if inside.shape != labels.shape:
            raise ValueError(f"The channels have spatial shape {inside.shape} but the labels {labels.shape}; pass the case's channels.")
    else:
        inside = np.ones(labels.shape, dtype=bool)
    regions: dict[str, np.ndarray] = {}
    for info in tumour_classes:
        if info.name in (BACKGROUND, BRAIN_OUTSIDE_TUMOUR):
            raise ValueError(f"A class may not be called {info.name!r}, a name kept for a fixed region; rename it in the model card.")
        regions[info.name] = labels == int(info.label)
    tumour = labels != 0
    regions[BRAIN_OUTSIDE_TUMOUR] = inside & ~tumour
    regions[BACKGROUND] = ~inside & ~tumour
    if atlas is not None:
        atlas = np.asarray(atlas)
        if atlas.shape != labels.shape or not np.issubdtype(atlas.dtype, np.integer):
            raise ValueError(f"The atlas must be an integer labels volume on the case grid {labels.shape}, got {atlas.dtype} {atlas.shape}.")
        names = dict(atlas_names or {})
        values = sorted((set(np.unique(atlas).tolist()) | {int(v) for v in names}) - {0})
        for value in values:
            regions[f"{ATLAS_PREFIX}{names.get(value, value)}"] = atlas == value
    return regions


def roi_importance(relevance: "Relevance", regions: Mapping[str, np.ndarray], *,
                   progress: _progress.ProgressFn | None = None,
                   should_cancel: _progress.CancelFn | None = None) -> RoiImportance:
    """e_{b->a} with its signed split for every explained class a and region b, and the modality shares."""
    maps = np.asarray(relevance.relevance)
    if maps.ndim < 3:
        raise ValueError(f"Relevance must be an array (classes, channels, *spatial), got shape {maps.shape}.")
    spatial = maps.shape[2:]
    names = tuple(regions)
    masks = [_mask(regions[name], spatial, f"Region {name!r}") for name in names]
    layers = _disjoint_layers(masks)
    n_classes, n_channels = maps.shape[:2]
    importance = np.zeros((n_classes, len(names)))
    positive, negative = np.zeros_like(importance), np.zeros_like(importance)
    share_positive, share_negative = np.zeros((n_classes, n_channels)), np.zeros((n_classes, n_channels))
    total = np.zeros(n_classes)
    for k in range(n_classes):
        _progress.step(k, n_classes, progress, should_cancel)
        flat = np.asarray(maps[k], dtype=np.float32).reshape(n_channels, -1)
        gains = np.maximum(flat, 0)
        losses = gains - flat                     # max(-e, 0), exactly
        share_positive[k] = gains.sum(axis=1, dtype=np.float64)
        share_negative[k] = losses.sum(axis=1, dtype=np.float64)
        total[k] = share_positive[k].sum() + share_negative[k].sum()
        if not math.isfinite(total[k]):
            raise ValueError(f"The relevance of class {relevance.class_names[k]!r} contains NaN or infinite values; explain the case again.")
        gains, losses = gains.sum(axis=0), losses.sum(axis=0)
        for label_image, members in layers:
            size = len(members) + 1
            up = np.bincount(label_image, weights=gains, minlength=size)
            down = np.bincount(label_image, weights=losses, minlength=size)
            for slot, r in enumerate(members, start=1):
                positive[k, r], negative[k, r] = up[slot], down[slot]
    _progress.step(n_classes, n_classes, progress, None)
    scale = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)[:, None]
    positive, negative = positive * scale, negative * scale
    share_positive, share_negative = share_positive * scale, share_negative * scale
    modalities, source = tuple(relevance.channel_names), f"the {relevance.method} maps"
    sequences = getattr(relevance, "sequences", None)
    if sequences is not None:  # exact: the Shapley values of the sequences (modality_shapley)
        share_positive, share_negative = sequence_split(sequences, relevance.class_names)
        modalities, source = tuple(sequences.channel_names), "exact Shapley values of the sequences"
    return RoiImportance(
        class_names=tuple(relevance.class_names), region_names=names, importance=positive + negative,
        positive=positive, negative=negative, modality_names=modalities,
        modality_share=share_positive + share_negative, total=total,
        region_voxels=np.array([np.count_nonzero(m) for m in masks], dtype=np.int64), method=relevance.method,
        target=relevance.target_description, modality_positive=share_positive, modality_negative=share_negative,
        modality_source=source,
    )


def sequence_split(sequences, class_names) -> tuple[np.ndarray, np.ndarray]:
    """Per class (rows in ``class_names`` order) and sequence: max(phi, 0) and max(-phi, 0) over sum |phi|."""
    rows = np.stack([sequences.values[list(sequences.class_names).index(name)] for name in class_names])
    total = np.abs(rows).sum(axis=1, keepdims=True)
    scale = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
    return np.maximum(rows, 0) * scale, np.maximum(-rows, 0) * scale


def _disjoint_layers(masks: list[np.ndarray]) -> list[tuple[np.ndarray, list[int]]]:
    """Regions packed into layers of non-overlapping ones: (flat label image, 1 + position -> region index) each."""
    layers: list[tuple[np.ndarray, list[int]]] = []
    for r, mask in enumerate(masks):
        flat = mask.reshape(-1)
        for label_image, members in layers:
            if not np.any(label_image[flat]):
                break
        else:
            label_image, members = np.zeros(flat.size, dtype=np.intp), []
            layers.append((label_image, members))
        members.append(r)
        label_image[flat] = len(members)
    return layers


def _mask(mask: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A boolean mask of the given spatial shape, or ValueError."""
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != tuple(shape):
        raise ValueError(f"{what} must be a boolean array of the relevance's spatial shape {tuple(shape)}, got {mask.dtype} {mask.shape}.")
    return mask


def _index(names: tuple[str, ...], name: str, what: str) -> int:
    """Position of ``name`` in ``names``, or ValueError listing them."""
    if name not in names:
        raise ValueError(f"No {what} {name!r}; the {what}s are: {', '.join(names)}.")
    return names.index(name)


def _optional(table: np.ndarray | None, k: int, c: int) -> float | None:
    """table[k, c] as a float, or None without a table."""
    return None if table is None else float(table[k, c])


def _cell(value) -> str:
    """A CSV cell: floats with full precision (repr), None as empty."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)
