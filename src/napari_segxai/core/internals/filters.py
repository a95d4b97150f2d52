"""What a layer's filters look for: the first layer's kernels per input sequence, and each deeper channel's
strongest-responding input patches on a case (over training cases: :mod:`.training_patches`).

Montages are 2D float arrays (NaN in the gaps between tiles); :func:`montage_png` draws one as a PNG
through matplotlib, as the report's figures are written.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
from torch import nn

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def first_convolution(network: nn.Module, in_channels: int) -> tuple[str, np.ndarray]:
    """The first convolution reading the ``in_channels`` input sequences: its name and kernels (out, in, *k)."""
    for name, module in network.named_modules():
        if isinstance(module, _CONVOLUTIONS) and module.in_channels == in_channels and module.groups == 1:
            return name, module.weight.detach().float().cpu().numpy()
    raise ValueError(
        f"The network has no convolution module reading its {in_channels} input sequences (a TorchScript archive "
        "hides its modules); first-layer filters can be shown for networks built from their Python class."
    )


def _tiles(kernel: np.ndarray) -> list[np.ndarray]:
    """A kernel (*k) as 2D tiles: its slices along the last axis (3D), itself (2D), or one row (1D)."""
    if kernel.ndim == 1:
        return [kernel[None, :]]
    if kernel.ndim == 2:
        return [kernel]
    return [kernel[..., i] for i in range(kernel.shape[-1])] if kernel.ndim == 3 else [
        kernel.reshape(kernel.shape[0], -1)]


def grid_montage(rows: Sequence[Sequence[np.ndarray]], gap: int = 1) -> np.ndarray:
    """2D tiles laid out row by row with ``gap`` NaN pixels between them (tiles of one shape)."""
    if not rows or not rows[0]:
        raise ValueError("A montage needs at least one tile.")
    th, tw = rows[0][0].shape
    n_cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (th + gap) - gap, n_cols * (tw + gap) - gap), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            out[i * (th + gap): i * (th + gap) + th, j * (tw + gap): j * (tw + gap) + tw] = tile
    return out


def kernel_montage(kernels: np.ndarray, sequence: int) -> np.ndarray:
    """The kernels (out, in, *k) seen by input ``sequence``: one row per output channel, one tile per kernel slice."""
    if not 0 <= sequence < kernels.shape[1]:
        raise ValueError(f"The layer reads {kernels.shape[1]} input sequences; sequence {sequence} does not exist.")
    return grid_montage([_tiles(kernels[o, sequence]) for o in range(kernels.shape[0])])


@dataclass(frozen=True, eq=False)
class Patch:
    """One place where a channel responds strongly: its voxel on the case grid, the response and the input around it."""

    channel: int
    centre: tuple[int, ...]
    response: float
    image: np.ndarray   # (C, *size) the input sequences around ``centre`` (zero-padded at the border)
    case: str = ""      # the case it comes from, where several are searched (a training case's name)


def strongest_patches(channel_map: np.ndarray, image: np.ndarray, channel: int, *, count: int = 6,
                      size: int = 16) -> list[Patch]:
    """The ``count`` strongest separate responses of one channel's map (*case) and the input patches (C, *size) there.

    Each pick blanks a ``size`` cube around it, so the patches do not overlap.
    """
    response = np.array(channel_map, dtype=np.float32, copy=True)
    if response.shape != image.shape[1:]:
        raise ValueError(f"The channel map {response.shape} and the image {image.shape[1:]} are on different grids.")
    half = size // 2
    padded = np.pad(image, [(0, 0)] + [(half, size - half)] * response.ndim)
    patches = []
    for _ in range(count):
        flat = int(np.nanargmax(response))
        value = float(response.flat[flat])
        if not np.isfinite(value):
            break
        centre = np.unravel_index(flat, response.shape)
        window = tuple(slice(c, c + size) for c in centre)  # in the padded image: centred on ``centre``
        patches.append(Patch(int(channel), tuple(int(c) for c in centre), value, padded[(slice(None),) + window].copy()))
        response[tuple(slice(max(c - half, 0), c + size - half) for c in centre)] = -np.inf
    return patches


def patch_montage(patches: Sequence[Patch]) -> np.ndarray:
    """One row per patch, one tile per input sequence: the patch's middle slice along the last axis, scaled to [0, 1]."""
    rows = []
    for patch in patches:
        row = []
        for sequence in patch.image:
            tile = sequence[..., sequence.shape[-1] // 2] if sequence.ndim == 3 else np.atleast_2d(sequence)
            lo, hi = float(np.min(tile)), float(np.max(tile))
            row.append((tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile))
        rows.append(row)
    return grid_montage(rows)


def save_montage(montage: np.ndarray, path: str | Path, *, signed: bool = True, scale: int = 8,
                 row_labels: Sequence[str] = ()) -> Path:
    """Write a montage as a PNG (:func:`montage_png`)."""
    path = Path(path)
    path.write_bytes(montage_png(montage, signed=signed, scale=scale, row_labels=row_labels))
    return path


def montage_png(montage: np.ndarray, *, signed: bool = True, scale: int = 8, row_labels: Sequence[str] = ()) -> bytes:
    """A montage as PNG bytes, each pixel ``scale`` pixels wide; signed values on a blue-white-red scale.

    ``row_labels`` (one per row of tiles, e.g. the case each patch comes from) are written left of the rows.
    """
    import matplotlib
    import matplotlib.image

    values = np.kron(np.asarray(montage, dtype=np.float32), np.ones((scale, scale), dtype=np.float32))
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 1.0
    cmap, vmin, vmax = ("RdBu_r", -top, top) if signed else ("gray", 0.0, max(top, 1e-12))
    rgba = matplotlib.colormaps[cmap]((np.clip(values, vmin, vmax) - vmin) / max(vmax - vmin, 1e-12))
    rgba[~np.isfinite(values)] = (1.0, 1.0, 1.0, 1.0)
    buffer = io.BytesIO()
    if row_labels:
        _save_with_row_labels(rgba, list(row_labels), buffer, gap=scale)
    else:
        matplotlib.image.imsave(buffer, rgba, format="png")
    return buffer.getvalue()


def _save_with_row_labels(rgba: np.ndarray, labels: list[str], out: BinaryIO, gap: int) -> None:
    """The image with ``labels`` written left of its equal rows of tiles (separated by ``gap`` image pixels)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = rgba.shape[:2]
    margin, dpi = 7 * max(len(label) for label in labels) + 12, 100
    figure = Figure(figsize=((width + margin) / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((margin / (width + margin), 0, width / (width + margin), 1))
    axes.imshow(rgba, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    pitch = (height + gap) / len(labels)  # one row of tiles and its gap, in pixels
    for i, label in enumerate(labels):
        figure.text(margin / (width + margin) - 0.01, 1 - (i * pitch + (pitch - gap) / 2) / height, label, ha="right",
                    va="center", fontsize=8, family="monospace")
    figure.savefig(out, dpi=dpi, format="png", facecolor="white")
