"""Figures of the trust measures, drawn with matplotlib's Agg renderer (no GUI toolkit) and written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..io.files import atomic_path

if TYPE_CHECKING:
    from .quality import QualityResult
    from .randomisation import RandomisationResult
    from .tables import SummaryRow

RANDOMISATION_TITLE = "Model parameter randomisation (0 = trained network)"


def randomisation_plot(result: "RandomisationResult", path: str | Path, *, measure: str = "spearman") -> Path:
    """Similarity to the trained network's map against the number of layers randomised, one panel per mode and class, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes, classes = _modes(result), _classes(result)
    figure = Figure(figsize=(4.2 * len(classes), 3.4 * len(modes)), dpi=100)
    FigureCanvasAgg(figure)
    draw_randomisation(figure, result, measure=measure)
    figure.tight_layout()
    return _save(figure, path)


def draw_randomisation(figure, result: "RandomisationResult", *, measure: str = "spearman",
                       classes: Sequence[str] | None = None, title: str | None = RANDOMISATION_TITLE) -> list:
    """Draw the randomisation panels (rows: modes, columns: ``classes``, default all) into a matplotlib figure; the axes."""
    from matplotlib.ticker import MaxNLocator

    from .randomisation import PASS_SPEARMAN
    from .similarity import similarity_measures

    labels = {m.name: m.help for m in similarity_measures()}
    if measure not in labels:
        raise ValueError(f"Unknown similarity {measure!r}; choose one of {', '.join(labels)}.")
    modes = _modes(result)
    classes = _classes(result) if classes is None else list(classes)
    unknown = [name for name in classes if name not in _classes(result)]
    if unknown or not classes or not modes:
        raise ValueError(f"There is no randomisation result for class {unknown[0] if unknown else None!r}; "
                         f"the result has {', '.join(_classes(result)) or 'no classes'}.")
    methods = list(dict.fromkeys(r.method for r in result.rows))
    axes = np.atleast_2d(figure.subplots(len(modes), len(classes), squeeze=False))
    n_layers = len(result.layers)
    lowest = min([getattr(r, measure) for r in result.rows if np.isfinite(getattr(r, measure))] + [0.0])
    for i, mode in enumerate(modes):
        for j, name in enumerate(classes):
            ax = axes[i, j]
            for method in methods:
                points = sorted((r.depth, getattr(r, measure)) for r in result.rows
                                if r.method == method and r.class_name == name and r.mode in ("none", mode))
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=method)
            ax.axhline(0.0, color="0.7", linewidth=0.8)
            if measure == "spearman":
                ax.axhline(PASS_SPEARMAN, color="0.5", linewidth=0.8, linestyle="--", label="pass below")
            ax.set_ylim(min(-0.2 if measure == "spearman" else -0.05, lowest - 0.05), 1.05)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0, n_layers)
            ax.set_title(f"{name}: {mode}", fontsize=10)
            ax.set_xlabel("layers randomised from the output" if mode == "cascading" else "layer position from the output")
            if j == 0:
                ax.set_ylabel(labels[measure], fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="lower left")
    if title:
        figure.suptitle(title, fontsize=11)
    return list(axes.ravel())


def _modes(result: "RandomisationResult") -> list[str]:
    """The randomisation modes a result has rows of, in the usual order."""
    return [m for m in ("cascading", "independent") if any(r.mode == m for r in result.rows)]


def _classes(result: "RandomisationResult") -> list[str]:
    """The class names of a result's rows, in order."""
    return list(dict.fromkeys(r.class_name for r in result.rows))


def deletion_plot(result: "QualityResult", path: str | Path) -> Path:
    """Deletion curves (normalised target output against the share of voxels removed), one panel per class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = result.curves
    if not curves:
        raise ValueError("There are no deletion curves to plot; run the deletion metric first.")
    classes = list(dict.fromkeys(c.class_name for c in curves))
    figure = Figure(figsize=(4.2 * len(classes), 3.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(1, len(classes), squeeze=False)[0])
    for ax, name in zip(axes, classes):
        for curve in curves:
            if curve.class_name == name:
                style = "--" if curve.order == "random" else "-"
                label = "random order" if curve.order == "random" else curve.method
                if curve.order == "random" and any(l.get_label() == label for l in ax.get_lines()):
                    continue
                ax.plot(curve.fractions, curve.normalised, style, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("share of voxels removed (most relevant first)")
        ax.set_ylabel("target output (1 = intact, 0 = all removed)", fontsize=8)
    axes[-1].legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def summary_plot(summary: "Sequence[SummaryRow]", path: str | Path, *, title: str = "") -> Path:
    """One panel per measure: a bar per group (method) at its mean, the sample SD as error bar; measures never measured left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    measures = list(dict.fromkeys(r.measure for r in summary if r.n))
    if not measures:
        raise ValueError("There is no measured value to plot; run at least one measure on at least one case.")
    groups = list(dict.fromkeys(r.group for r in summary))
    by_key = {(r.measure, r.group): r for r in summary}
    columns = min(4, len(measures))
    rows = -(-len(measures) // columns)
    figure = Figure(figsize=(3.3 * columns, 2.6 * rows + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for ax, measure in zip(axes, measures):
        shown = [i for i, g in enumerate(groups) if (measure, g) in by_key and by_key[(measure, g)].n]
        means = [by_key[(measure, groups[i])].mean for i in shown]
        sds = np.nan_to_num([by_key[(measure, groups[i])].sd for i in shown])   # one value: no spread to draw
        ax.bar(range(len(shown)), means, yerr=sds, color=[colours[i] for i in shown], capsize=3)
        ax.set_xticks(range(len(shown)), [groups[i] for i in shown], rotation=30, ha="right", fontsize=7)
        ax.set_title(measure.replace("_", " "), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.axhline(0.0, color="0.5", linewidth=0.6)
    for ax in axes[len(measures):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    """Write a figure as PNG through a temporary file."""
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return Path(path)
