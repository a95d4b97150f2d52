"""Feature maps of one layer on a case, on the case's grid, with each channel's class-specificity.

A channel's specificity for class k is how far its mean activation inside the voxels the network
predicts as k lies above its mean in the rest of the head, in units of the channel's spread in the
head: d_k = (mean_in_k - mean_out_k) / std_head. Its score is its largest d_k over the foreground
classes; channels are shown in the order of that score. Statistics are taken on the network grid,
where the layer was computed; only the kept channels are put on the case grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from .. import progress as _progress
from ..model.card import build_network
from ..model.device import pick_device
from ..model.inference import silent_voxels
from ..model.preprocess import preprocess
from .layers import find_layer, layer_output_shapes
from .windowed import as_stack, layer_passes, padded_to_window, plan_passes, window_plan

#: The most bytes the channel maps of one sliding pass may take on the network grid.
MAP_BUDGET_BYTES = 1_000_000_000
#: Channels put on the case grid by default (the most class-specific).
DEFAULT_KEEP = 8


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Per-channel activation inside and outside each class's predicted region, and the specificity ranking."""

    mean_inside: np.ndarray   # (C, K) mean activation inside the voxels predicted as class k (nan: none predicted)
    mean_outside: np.ndarray  # (C, K) mean activation in the rest of the head
    spread: np.ndarray        # (C,) standard deviation in the head
    specificity: np.ndarray   # (C, K) (inside - outside) / spread; nan where class k is not predicted
    class_names: tuple[str, ...]
    foreground: tuple[int, ...]  # the classes a channel's score is taken over

    @property
    def score(self) -> np.ndarray:
        """(C,) each channel's largest specificity over the foreground classes (-inf when none is predicted)."""
        values = self.specificity[:, list(self.foreground)] if self.foreground else self.specificity[:, :0]
        if values.size == 0 or np.all(np.isnan(values)):
            return np.full(self.specificity.shape[0], -np.inf)
        return np.where(np.all(np.isnan(values), axis=1), -np.inf, np.nanmax(np.where(np.isnan(values), -np.inf, values), axis=1))

    @property
    def preferred(self) -> np.ndarray:
        """(C,) the class index each channel is most specific to (-1 when no foreground class is predicted)."""
        if not self.foreground:
            return np.full(self.specificity.shape[0], -1)
        values = np.where(np.isnan(self.specificity[:, list(self.foreground)]), -np.inf,
                          self.specificity[:, list(self.foreground)])
        best = np.asarray(self.foreground)[values.argmax(1)]
        return np.where(np.isfinite(values.max(1)), best, -1)

    def order(self) -> np.ndarray:
        """Channel indices, most class-specific first (ties and unscored channels by larger spread)."""
        return np.lexsort((-self.spread, -self.score))

    def rows(self, limit: Optional[int] = None) -> list[dict]:
        """The channels as plain records, most class-specific first."""
        preferred = self.preferred
        rows = []
        for c in self.order()[:limit]:
            k = int(preferred[c])
            rows.append({
                "channel": int(c),
                "class": None if k < 0 else self.class_names[k],
                "specificity": None if k < 0 else round(float(self.specificity[c, k]), 4),
                "mean_inside": None if k < 0 else round(float(self.mean_inside[c, k]), 5),
                "mean_outside": None if k < 0 else round(float(self.mean_outside[c, k]), 5),
                "spread": round(float(self.spread[c]), 5),
            })
        return rows


@dataclass(frozen=True, eq=False)
class FeatureMaps:
    """The kept channels of one layer on the case's grid (C_kept, *case), with every channel's statistics."""

    layer: str
    kind: str
    maps: np.ndarray             # (C_kept, *case shape) float32
    channels: tuple[int, ...]    # the layer's channel index of each kept map
    n_channels: int
    stats: ChannelStats
    labels: np.ndarray           # (*case shape) int16 class index predicted by the same pass (-1 outside the head)
    affine: np.ndarray           # the case's affine
    seconds: float
    windows: int
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line: layer, channels kept and the most class-specific channel."""
        rows = self.stats.rows(1)
        top = rows[0] if rows else None
        best = (f"; most class-specific: channel {top['channel']} for {top['class']} (d = {top['specificity']:.2f})"
                if top and top["class"] is not None else "")
        return (f"{self.layer} ({self.kind}): {self.n_channels} channels, {len(self.channels)} kept on the case grid"
                f"{best}; {self.seconds:.1f} s")


def class_masks(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """bool (K, *grid): the voxels predicted as each class (argmax for softmax; p > 0.5 for sigmoid)."""
    if activation == "softmax":
        best = logits.argmax(0)
        return torch.stack([best == k for k in range(logits.shape[0])])
    return torch.sigmoid(logits) > 0.5


def labels_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(*grid) the index of the last class whose mask holds each voxel, -1 where none does (outside the head)."""
    order = torch.arange(1, masks.shape[0] + 1, device=masks.device).view((-1,) + (1,) * (masks.ndim - 1))
    return (masks.long() * order).amax(0) - 1


def channel_stats(maps: torch.Tensor, masks: torch.Tensor, head: torch.Tensor, class_names: Sequence[str],
                  foreground: Sequence[int]) -> ChannelStats:
    """Statistics of maps (C, *grid) inside each class mask (K, *grid) vs the rest of ``head`` (bool, *grid)."""
    flat = maps.reshape(maps.shape[0], -1).double()
    head = head.reshape(-1)
    inside_head = flat[:, head]
    spread = inside_head.std(1, unbiased=False) if inside_head.shape[1] else torch.zeros(flat.shape[0], dtype=flat.dtype)
    n_channels, n_classes = flat.shape[0], masks.shape[0]
    mean_in = np.full((n_channels, n_classes), np.nan)
    mean_out = np.full((n_channels, n_classes), np.nan)
    for k in range(n_classes):
        mask = masks[k].reshape(-1) & head
        rest = head & ~mask
        if mask.any():
            mean_in[:, k] = flat[:, mask].mean(1).cpu().numpy()
        if rest.any():
            mean_out[:, k] = flat[:, rest].mean(1).cpu().numpy()
    spread = spread.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        specificity = (mean_in - mean_out) / np.maximum(spread, 1e-12)[:, None]
    return ChannelStats(mean_in, mean_out, spread, specificity, tuple(class_names), tuple(int(k) for k in foreground))


def _foreground(card) -> tuple[int, ...]:
    values = card.label_values
    if card.activation == "softmax" and 0 in values:
        return tuple(k for k, v in enumerate(values) if v != 0)
    return tuple(range(len(values)))


def feature_maps(case, card, layer: str, **options) -> FeatureMaps:
    """The feature maps of ``layer`` on ``case`` (window by window, memory bounded), on the case grid.

    ``options`` as for :func:`iter_feature_maps`; ``channels`` chooses the channels put on the case grid,
    by default the ``keep`` most class-specific.
    """
    return next(iter_feature_maps(case, card, [layer], **options))


def iter_feature_maps(
    case,
    card,
    layers: Sequence[str],
    *,
    network: Optional[torch.nn.Module] = None,
    device=None,
    keep: int = DEFAULT_KEEP,
    channels: Optional[Sequence[int]] = None,
    budget_bytes: int = MAP_BUDGET_BYTES,
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
) -> Iterator[FeatureMaps]:
    """The feature maps of each of ``layers``, in order, each yielded as soon as its last channel is computed.

    The layers share sliding passes (as many channels per pass as fit ``budget_bytes`` on the network grid),
    so every layer of a network costs a few passes, not one each; only the kept channels of the layer being
    finished are ever on the case grid. ``seconds`` of each result counts from the start of the whole run.
    """
    start = time.perf_counter()
    if keep < 1 and channels is None:
        raise ValueError(f"Keep at least one channel on the case grid, not {keep}.")
    if channels is not None and len(layers) != 1:
        raise ValueError("Name channels for one layer at a time; for several layers the most class-specific are kept.")
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    kinds = {layer: type(find_layer(network, layer)).__name__ for layer in layers}
    image, grid = preprocess(case, card, device=device)
    stack = padded_to_window(as_stack(image, card), card)[0]
    window = tuple(slice(0, int(r)) for r in tuple(card.roi_size)[-(stack.ndim - 2):])
    shapes = layer_output_shapes(network, list(kinds), stack[(slice(0, 1), slice(None)) + window])
    for layer, shape in shapes.items():
        if len(shape) != stack.ndim:
            raise ValueError(f"Layer {layer!r} outputs a tensor shaped {shape}, not a feature map; choose a "
                             "convolution, normalisation or activation layer.")
        if channels is not None:
            bad = [int(c) for c in channels if not 0 <= int(c) < shape[1]]
            if bad:
                raise ValueError(f"Layer {layer!r} has channels 0..{shape[1] - 1}; channel {bad[0]} does not exist.")
    head = ~torch.as_tensor(silent_voxels(image[0]), device=image.device)
    plan = plan_passes([(layer, shapes[layer][1]) for layer in kinds], int(np.prod(image.shape[2:])), budget_bytes)
    remaining = {layer: sum(1 for items in plan for name, _ in items if name == layer) for layer in kinds}
    parts: dict[str, list[ChannelStats]] = {layer: [] for layer in kinds}
    kept: dict[str, dict[int, torch.Tensor]] = {layer: {} for layer in kinds}
    masks, labels, windows = None, None, len(window_plan(stack, card)[0])
    for items, maps, logits in layer_passes(network, image, card, plan, progress=progress, should_cancel=should_cancel):
        if logits is not None:
            masks = class_masks(logits, card.activation) & head
            shifted = (labels_from_masks(masks) + 1).float().cpu()  # a grid that crops (nnU-Net's) fills 0 outside
            labels = np.asarray(grid.to_case_grid(shifted, interpolation="nearest")).astype(np.int16) - 1
        for (layer, group), layer_maps in zip(items, maps):
            parts[layer].append(channel_stats(layer_maps, masks, head, card.class_names, _foreground(card)))
            wanted = _chosen(parts[layer], channels, keep)
            kept[layer] = {c: m for c, m in kept[layer].items() if c in wanted}
            kept[layer].update({c: layer_maps[c - group.start].clone() for c in wanted if group.start <= c < group.stop})
            remaining[layer] -= 1
            if remaining[layer] == 0:
                yield _finished(layer, kinds[layer], shapes[layer][1], _joined(parts.pop(layer)), kept.pop(layer),
                                channels, keep, masks, labels, grid, case, card, start, windows)
        del maps


def _finished(layer, kind, n_channels, stats, kept, channels, keep, masks, labels, grid, case, card, start,
              windows) -> FeatureMaps:
    """A layer's result: its kept channels put on the case grid (one at a time), its statistics and notes."""
    chosen = tuple(int(c) for c in (channels if channels is not None else stats.order()[:keep]))
    on_case = np.empty((len(chosen),) + tuple(case.shape), dtype=np.float32)
    for i, c in enumerate(chosen):
        on_case[i] = np.asarray(grid.to_case_grid(kept.pop(c).cpu()))
    notes = () if masks[list(_foreground(card))].any() else (
        "no foreground class is predicted on this case, so the channels are ordered by their spread, not by class",)
    return FeatureMaps(layer=layer, kind=kind, maps=on_case, channels=chosen, n_channels=int(n_channels), stats=stats,
                       labels=labels, affine=np.array(case.affine, dtype=float), seconds=time.perf_counter() - start,
                       windows=windows, notes=notes)


def _chosen(parts: list[ChannelStats], channels, keep: int) -> set[int]:
    """The channels to keep after this group: the user's, else the ``keep`` best scored so far."""
    if channels is not None:
        return {int(c) for c in channels}
    stats = _joined(parts)
    return {int(c) for c in stats.order()[:keep]}


def _joined(parts: list[ChannelStats]) -> ChannelStats:
    """The statistics of successive channel groups as one."""
    first = parts[0]
    return ChannelStats(np.concatenate([p.mean_inside for p in parts]), np.concatenate([p.mean_outside for p in parts]),
                        np.concatenate([p.spread for p in parts]), np.concatenate([p.specificity for p in parts]),
                        first.class_names, first.foreground)
