"""The RoI importance bar chart (matplotlib, no Qt): drawn by the RoI dock widget and by the case report."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from .roi import BACKGROUND, BRAIN_OUTSIDE_TUMOUR, RoiImportance

FIXED_COLORS = {BRAIN_OUTSIDE_TUMOUR: "#9aa0a6", BACKGROUND: "#5f6368"}
MODALITY_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f")
VIEWS = ("region", "modality")


def draw_roi_bars(axes, table: RoiImportance, *, view: str = "region", signed: bool = False,
                  region_colors: Optional[Mapping[str, str]] = None, edge: str = "#333333",
                  title: str = "") -> list[tuple]:
    """Grouped bars, one group per explained class, one bar per region (or modality); the bars drawn.

    Returns ``(patch, view, class index, bar index, part)`` per bar (part: total, positive or
    negative), so a widget can say what a bar under the mouse means; :func:`legend_entries` gives
    the legend.
    """
    from matplotlib.ticker import PercentFormatter

    if view not in VIEWS:
        raise ValueError(f"Unknown chart view {view!r}; choose region or modality.")
    if view == "modality":
        names = table.modality_names
        totals, positive, negative = table.modality_share, table.modality_positive, table.modality_negative
        colors = [MODALITY_COLORS[i % len(MODALITY_COLORS)] for i in range(len(names))]
        label = "share of |relevance| in the modality"
    else:
        names = table.region_names
        totals, positive, negative = table.importance, table.positive, table.negative
        known = {**FIXED_COLORS, **dict(region_colors or {})}
        colors = [known.get(name, "#888888") for name in names]
        label = "e(b→a): share of |relevance| in region b"
    signed = signed and positive is not None and negative is not None
    groups = np.arange(len(table.class_names))
    width = 0.8 / max(len(names), 1)
    bars = []
    for i, (name, color) in enumerate(zip(names, colors)):
        x = groups + (i - (len(names) - 1) / 2) * width
        if signed:
            up = axes.bar(x, positive[:, i], width, color=color, label=name, edgecolor=edge, linewidth=0.4)
            down = axes.bar(x, negative[:, i], width, bottom=positive[:, i], color=color, alpha=0.5,
                            hatch="///", edgecolor=edge, linewidth=0.4)
            parts = (("positive", up), ("negative", down))
        else:
            parts = (("total", axes.bar(x, totals[:, i], width, color=color, label=name,
                                        edgecolor=edge, linewidth=0.4)),)
        for part, container in parts:
            for k, patch in enumerate(container.patches):
                bars.append((patch, view, k, i, part))
    axes.set_xticks(groups, [f"for {name}" for name in table.class_names])
    axes.set_ylabel(label, fontsize=8)
    top = float(np.max(totals)) if totals.size else 0.0
    axes.set_ylim(0, max(top * 1.12, 0.05))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.tick_params(labelsize=8)
    axes.grid(axis="y", linewidth=0.4, alpha=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if title:
        axes.set_title(title, fontsize=9)
    if table.class_names and not np.any(table.total > 0):
        axes.text(0.5, 0.5, "The relevance is zero everywhere.", ha="center", va="center", transform=axes.transAxes)
    return bars


def legend_entries(axes, *, signed: bool, edge: str = "#333333") -> tuple[list, list[str]]:
    """The chart's legend: one entry per region (or modality), and the hatch key when the bars are signed."""
    from matplotlib.patches import Patch

    handles, labels = axes.get_legend_handles_labels()
    if signed:
        handles += [Patch(facecolor="none", edgecolor=edge, label="positive"),
                    Patch(facecolor="none", edgecolor=edge, hatch="///", label="negative")]
        labels += ["positive", "negative (hatched)"]
    return handles, labels
