"""Thumbnails of a case (a grey slice with its segmentation outline) and contact sheets of them.

A thumbnail is the slice through a voxel (the centre of an influential region, say) of one
channel (FLAIR when the case has it, else the first), windowed at robust percentiles, with the
outline of every labelled region drawn in its class colour. A 3D case with an affine is first
brought to the closest RAS axes (permute/flip only), and the slice is shown the way radiologists
read it and the viewer shows it (``orientation.RADIOLOGICAL``): an axial slice (``axis=2``) with the
patient's right on the left of the picture and anterior at the top; coronal and sagittal slices with
superior at the top (a sagittal one with anterior on the left). Voxel spacing sets
the aspect ratio; the picture is centred on a black ``size`` x ``size`` square. Voxels that are
exactly zero are black (outside a skull-stripped or z-scored brain), whatever the window.

Only numpy, scipy, nibabel and matplotlib's Agg renderer are used: no GUI toolkit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .io.files import atomic_path
from .orientation import on_screen, plane_of, plane_view

DEFAULT_SIZE = 128
PREFERRED_MODALITY = "flair"
WINDOW_PERCENTILES = (1.0, 99.0)
# Colours for label values without one of their own (Trubetskoy's distinct colours, as the viewer uses).
FALLBACK_COLORS: tuple[str, ...] = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)
ROW_ORDER = ("Proponents", "Opponents")

Colors = Union[Mapping[int, Any], Sequence[Any], None]
POSITIVE_RGB = np.array([230, 40, 30], dtype=np.float32)    # relevance overlay: evidence for the class
NEGATIVE_RGB = np.array([40, 110, 240], dtype=np.float32)   # evidence against it
OVERLAY_OPACITY = 0.9


@dataclass(frozen=True)
class Tile:
    """One labelled thumbnail of a contact sheet: a training case, its class and its score."""

    image: np.ndarray       # (H, W, 3) uint8
    case_id: str
    class_name: str
    score: float

    @property
    def caption(self) -> str:
        """Two lines under the picture: the case id, then the class and the score."""
        return f"{self.case_id}\n{self.class_name}  {format_score(self.score)}"


def format_score(score: float) -> str:
    """A signed score with three significant digits (TracIn scores span many magnitudes)."""
    return f"{float(score):+.3g}"


# --------------------------------------------------------------------------- colours


def rgb(color: Any) -> np.ndarray:
    """An RGB uint8 triple from a colour name, hex string, or 0-1 / 0-255 triple."""
    if isinstance(color, str):
        from matplotlib.colors import to_rgb

        try:
            return np.round(np.asarray(to_rgb(color)) * 255).astype(np.uint8)
        except ValueError as err:
            raise ValueError(f"{color!r} is not a colour; give a name or a hex colour such as '#3cb44b'.") from err
    values = np.asarray(color, dtype=float).ravel()[:3]
    if values.size != 3:
        raise ValueError(f"{color!r} is not a colour; give a name, a hex colour or an RGB triple.")
    if values.max() <= 1.0:
        values = values * 255
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def label_colors(colors: Colors, values: Sequence[int]) -> dict[int, np.ndarray]:
    """Label value -> RGB for the non-zero ``values``: from ``colors`` (a mapping, or classes with
    ``label`` and ``color`` such as a model card's), else from the fallback palette."""
    given: dict[int, Any] = {}
    if isinstance(colors, Mapping):
        given = {int(k): v for k, v in colors.items()}
    elif colors is not None:
        for info in colors:
            given[int(info.label)] = info.color
    out: dict[int, np.ndarray] = {}
    for rank, value in enumerate(sorted(int(v) for v in values if int(v) != 0)):
        out[value] = rgb(given.get(value, FALLBACK_COLORS[rank % len(FALLBACK_COLORS)]))
    return out


# --------------------------------------------------------------------------- the slice


def _channel_index(modalities: Sequence[str], channel: Union[int, str, None], count: int) -> int:
    """The channel to show: an index, a modality name, else FLAIR when present, else the first."""
    if channel is None:
        names = [m.lower() for m in modalities]
        return names.index(PREFERRED_MODALITY) if PREFERRED_MODALITY in names else 0
    if isinstance(channel, str):
        names = [m.lower() for m in modalities]
        if channel.lower() not in names:
            raise ValueError(
                f"The case has no {channel!r} channel (it has {', '.join(modalities) or 'unnamed channels'}); "
                "choose one of those."
            )
        return names.index(channel.lower())
    index = int(channel)
    if not 0 <= index < count:
        raise ValueError(f"Channel {index} does not exist; the case has {count} channels (0 to {count - 1}).")
    return index


def _volume_and_grid(source, labels, channel, affine, modalities):
    """The chosen channel as a spatial array, the labels, and the affine (or None) of ``source``."""
    if hasattr(source, "channels"):  # a Case
        data = np.asarray(source.channels)
        modalities = tuple(source.modalities)
        affine = source.affine if affine is None else affine
        if labels is None:
            labels = source.label
        index = _channel_index(modalities, channel, data.shape[0])
        volume = data[index]
    else:
        data = np.asarray(source)
        spatial = None if labels is None else np.ndim(labels)
        if spatial is not None and data.ndim == spatial:
            volume = data
        elif spatial is not None and data.ndim == spatial + 1:
            volume = data[_channel_index(tuple(modalities or ()), channel, data.shape[0])]
        elif spatial is None and data.ndim in (2, 3):
            volume = data
        else:
            raise ValueError(
                f"The image has shape {data.shape} and the labels {np.shape(labels)}; give channels "
                "(C, *spatial) or one volume with the labels' spatial shape."
            )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != volume.shape:
            raise ValueError(
                f"The labels' shape {labels.shape} differs from the image's {volume.shape}; give labels on the case's grid."
            )
    if volume.ndim not in (2, 3):
        raise ValueError(f"A thumbnail needs a 2D or 3D image; got {volume.ndim} spatial dimensions.")
    return np.asarray(volume, dtype=np.float32), labels, affine


def _to_ras(volume, labels, centroid, affine):
    """Permute/flip a 3D volume, its labels and a voxel index to the closest RAS axes; also return the spacing."""
    from nibabel.orientations import apply_orientation, io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=float))
    shape = volume.shape
    moved = [0] * 3
    for axis, (target, flip) in enumerate(ornt.astype(int)):
        moved[target] = centroid[axis] if flip == 1 else shape[axis] - 1 - centroid[axis]
    spacing_in = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    spacing = [0.0] * 3
    for axis, target in enumerate(ornt[:, 0].astype(int)):
        spacing[target] = float(spacing_in[axis])
    volume = apply_orientation(volume, ornt)
    labels = None if labels is None else apply_orientation(labels, ornt)
    return volume, labels, moved, spacing


def window(volume: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> tuple[float, float]:
    """Display range: percentiles of the finite non-zero voxels (of all finite voxels when none is non-zero)."""
    finite = volume[np.isfinite(volume)]
    values = finite[finite != 0] if np.any(finite != 0) else finite
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if not high > low:
        low, high = float(values.min()), float(values.max())
    if not high > low:
        high = low + 1.0
    return low, high


def _resample(plane: np.ndarray, height: int, width: int, order: int) -> np.ndarray:
    """``plane`` on a height x width pixel grid (pixel centres matched; order 0 nearest, 1 linear)."""
    rows = (np.arange(height) + 0.5) * plane.shape[0] / height - 0.5
    cols = (np.arange(width) + 0.5) * plane.shape[1] / width - 0.5
    if order == 0:
        r = np.clip(np.floor(rows + 0.5).astype(int), 0, plane.shape[0] - 1)
        c = np.clip(np.floor(cols + 0.5).astype(int), 0, plane.shape[1] - 1)
        return plane[np.ix_(r, c)]
    from scipy.ndimage import map_coordinates

    grid = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(plane.astype(np.float32), grid, order=1, mode="nearest")


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner boundary of a 2D mask, ``width`` pixels thick: pixels within that many 4-steps of its outside."""
    mask = np.asarray(mask, dtype=bool)
    interior = mask
    for _ in range(max(1, int(width))):
        padded = np.pad(interior, 1, constant_values=False)
        interior = interior & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def thumbnail(
    source,
    labels: Optional[np.ndarray],
    centroid: Sequence[float],
    axis: int = 2,
    size: int = DEFAULT_SIZE,
    colors: Colors = None,
    *,
    channel: Union[int, str, None] = None,
    affine: Optional[np.ndarray] = None,
    modalities: Optional[Sequence[str]] = None,
    highlight: Optional[int] = None,
    overlay: Optional[np.ndarray] = None,
    overlay_limit: Optional[float] = None,
) -> np.ndarray:
    """A (size, size, 3) uint8 picture: the slice through ``centroid`` with each label's outline in its colour.

    ``source`` is a Case, channels (C, *spatial) or one volume; ``labels`` integer label values on
    the same grid (None: the Case's reference label, or no outline). ``centroid`` is a voxel index
    on the stored grid. With an affine (a Case's, or given) a 3D volume is shown in RAS axes and
    ``axis`` counts RAS axes (0 sagittal, 1 coronal, 2 axial); without one, array axes. A 2D
    image is shown whole (``axis`` is ignored). ``colors``: label value -> colour, or a model
    card's classes. ``highlight``: a label value whose outline is drawn one pixel thicker (the
    region the picture is about). ``overlay``: a map on the same grid (e.g. relevance) blended over
    the slice, red where positive and blue where negative, opaque at ``overlay_limit`` (default:
    the largest |value|).
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"A thumbnail of {size} pixels is too small to read; use a size of at least 8.")
    volume, labels, affine = _volume_and_grid(source, labels, channel, affine, modalities)
    centroid = [int(round(float(c))) for c in centroid]
    if len(centroid) != volume.ndim:
        raise ValueError(
            f"The centroid {tuple(centroid)} has {len(centroid)} coordinates for a {volume.ndim}D image; give one per axis."
        )
    low, high = window(volume)
    if overlay is not None:
        overlay = np.asarray(overlay, dtype=np.float32)
        if overlay.shape != volume.shape:
            raise ValueError(f"The overlay's shape {overlay.shape} differs from the image's {volume.shape}; "
                             "give a map on the case's grid.")
        if overlay_limit is None:
            overlay_limit = float(np.max(np.abs(overlay))) if overlay.size else 0.0
    overlay_plane = None
    if volume.ndim == 3:
        if axis not in (0, 1, 2):
            raise ValueError(f"Axis {axis} does not exist in a 3D image; choose 0, 1 or 2 (2: axial).")
        if affine is not None:
            if overlay is not None:
                overlay = _to_ras(overlay, None, centroid, affine)[0]
            volume, labels, centroid, spacing = _to_ras(volume, labels, centroid, affine)
        else:
            spacing = [1.0, 1.0, 1.0]
        index = int(np.clip(centroid[axis], 0, volume.shape[axis] - 1))
        plane = np.take(volume, index, axis=axis)
        label_plane = None if labels is None else np.take(labels, index, axis=axis)
        overlay_plane = None if overlay is None else np.take(overlay, index, axis=axis)
    else:
        plane, label_plane, overlay_plane = volume, labels, overlay
        axis, spacing = 2, [1.0, 1.0, 1.0]
        if affine is not None and np.shape(affine) == (3, 3):
            spacing = [*np.linalg.norm(np.asarray(affine, dtype=float)[:2, :2], axis=0), 1.0]

    # Laid out in the radiological convention the viewer opens in too (core/orientation.py).
    view = plane_view(plane_of(axis))
    in_plane = tuple(a for a in range(3) if a != axis)
    plane = on_screen(plane, in_plane, view)
    label_plane = None if label_plane is None else on_screen(label_plane, in_plane, view)
    overlay_plane = None if overlay_plane is None else on_screen(overlay_plane, in_plane, view)
    extent = np.array([plane.shape[0] * spacing[view.rows], plane.shape[1] * spacing[view.columns]], dtype=float)
    height, width = (max(1, int(round(v))) for v in extent * size / extent.max())

    grey = (_resample(plane, height, width, order=1) - low) / (high - low)
    grey = np.round(np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8)
    grey[_resample(plane == 0, height, width, order=0)] = 0  # exact zeros: outside the (skull-stripped) brain
    picture = np.repeat(grey[..., None], 3, axis=2)
    if overlay_plane is not None and overlay_limit and overlay_limit > 0:
        values = _resample(overlay_plane, height, width, order=1)
        alpha = np.clip(np.abs(values) / overlay_limit, 0.0, 1.0)[..., None] * OVERLAY_OPACITY
        colour = np.where(values[..., None] >= 0, POSITIVE_RGB, NEGATIVE_RGB)
        picture = np.round(picture * (1 - alpha) + colour * alpha).astype(np.uint8)
    if label_plane is not None:
        shown = _resample(label_plane, height, width, order=0)
        values = [int(v) for v in np.unique(shown) if int(v) != 0]
        palette = label_colors(colors, [int(v) for v in np.unique(labels) if int(v) != 0] if labels is not None else values)
        line = max(1, size // 160)
        for value in sorted(values, key=lambda v: v == highlight):  # the highlighted outline on top
            picture[outline(shown == value, line + (value == highlight))] = palette[value]
    square = np.zeros((size, size, 3), np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    square[top:top + height, left:left + width] = picture
    return square


def case_tile(evidence, case, labels: Optional[np.ndarray] = None, colors: Colors = None,
              size: int = DEFAULT_SIZE, axis: int = 2) -> Tile:
    """The tile of one proponent or opponent (an ``Evidence``): its training case sliced through its region.

    With a model card's classes as ``colors``, the outline of the evidence's class is drawn thicker.
    """
    image = thumbnail(case, case.label if labels is None else labels, evidence.centroid, axis=axis,
                      size=size, colors=colors, highlight=class_label(colors, evidence.train_class))
    return Tile(image=image, case_id=str(evidence.training_case), class_name=str(evidence.train_class),
                score=float(evidence.score))


def class_label(classes: Colors, name: str) -> Optional[int]:
    """The label value of class ``name`` among a model card's classes (None when unknown or not given)."""
    if classes is None or isinstance(classes, Mapping):
        return None
    for info in classes:
        if getattr(info, "name", None) == name:
            return int(info.label)
    return None


# --------------------------------------------------------------------------- contact sheet


def contact_sheet(rows: Mapping[str, Sequence[Tile]], path: Union[str, Path], title: str = "",
                  *, dpi: int = 100) -> Path:
    """Write a PNG of labelled thumbnails, one row per entry of ``rows`` (e.g. Proponents, Opponents)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path.name} is not a .png name; give the contact sheet a .png name.")
    if not rows:
        raise ValueError("A contact sheet needs at least one row of thumbnails (e.g. Proponents).")
    columns = max(1, max(len(tiles) for tiles in rows.values()))
    tile_px = max([t.image.shape[0] for tiles in rows.values() for t in tiles] or [DEFAULT_SIZE])
    cell_w = max(tile_px, 150) / dpi          # inches per column (room for a case id under the picture)
    cell_h = (tile_px + 44) / dpi             # picture + two caption lines
    label_w, title_h = 0.45, (0.45 if title else 0.1)
    fig_w = label_w + columns * cell_w + 0.1
    fig_h = title_h + len(rows) * cell_h + 0.1
    figure = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    if title:
        figure.text(0.5, 1 - 0.25 / fig_h, title, ha="center", va="center", fontsize=11, weight="bold")
    for r, (row_name, tiles) in enumerate(rows.items()):
        top = fig_h - title_h - r * cell_h
        figure.text(0.2 / fig_w, (top - cell_h / 2) / fig_h, row_name, rotation=90,
                    ha="center", va="center", fontsize=11, weight="bold")
        if not tiles:
            figure.text((label_w + 0.1) / fig_w, (top - cell_h / 2) / fig_h, "none", ha="left",
                        va="center", fontsize=9, color="grey")
        for c, tile in enumerate(tiles):
            image = np.asarray(tile.image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"Tile {tile.case_id} is not an (H, W, 3) uint8 picture; make it with thumbnail().")
            left = label_w + c * cell_w + (cell_w - tile_px / dpi) / 2
            axes = figure.add_axes((left / fig_w, (top - tile_px / dpi) / fig_h, (tile_px / dpi) / fig_w,
                                    (tile_px / dpi) / fig_h))
            axes.imshow(image, interpolation="nearest")
            axes.set_axis_off()
            figure.text((label_w + c * cell_w + cell_w / 2) / fig_w, (top - tile_px / dpi - 0.04) / fig_h,
                        tile.caption, ha="center", va="top", fontsize=7, linespacing=1.3)
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", dpi=dpi, facecolor="white")
    return path
