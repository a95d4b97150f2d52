"""The registry of quality metrics and the loop that runs the chosen ones for every method on a problem.

A quality metric is a :class:`QualityMetric` subclass registered with :func:`register_metric`: its
``columns`` (the numbers it adds to a row, with a label and a sentence for tables and tooltips), a
progress ``weight``, its ``passes`` through the network (for the cost said before a check) and
``measure(context)``. The trust table, ``segxai trust --metrics``, the Trust
widget and the tests take the metrics from :func:`available_metrics`; adding one is one new module
imported by the package (``metrics.py`` holds the four built-in ones).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from .. import progress as _progress
from ..attribution import AttributionMethod
from ..attribution.cost import Passes
from .problem import Problem, method_label, relevance_of, stages
from .tables import MeasuredValues, write_csv


@dataclass(frozen=True)
class Column:
    """One number of a trust table row: its field name, a short label and a sentence saying what it measures."""

    name: str
    label: str
    help: str
    in_case_table: bool = True   # shown in the per-case table (quality.csv, the Trust widget) besides metrics.csv


@dataclass(frozen=True)
class QualitySettings:
    """The settings the quality metrics share (``segxai trust``'s defaults)."""

    baseline: str = "zeros"      # what removed voxels are set to (attribution baselines)
    subset: float = 0.1          # faithfulness: share of voxels per random subset
    n_subsets: int = 32          # faithfulness: number of subsets
    deletion_steps: int = 20     # deletion: points on the curve
    noise_samples: int = 8       # max-sensitivity: noisy inputs
    noise_radius: float = 0.05   # max-sensitivity: noise half-width, in each channel's standard deviations
    threshold: float = 0.1       # complexity: share of the largest |relevance|
    seed: int = 0
    batch_size: int = 0          # perturbed inputs per forward pass (0: automatic)


@dataclass
class MetricContext:
    """What a metric measures: the problem, one method and its map, the settings, and state shared across methods."""

    problem: Problem
    method: str | AttributionMethod
    label: str
    relevance: np.ndarray                     # (K_t, C, *spatial) on the problem's grid
    settings: QualitySettings
    shared: dict = field(default_factory=dict)   # per metric name: what it computes once for all methods
    curves: list = field(default_factory=list)   # deletion curves (or other per-class curves) to keep
    should_cancel: Callable[[], bool] | None = None


class QualityMetric:
    """Base of a quality metric: ``measure`` returns each of its ``columns`` as one value per explained class."""

    name: ClassVar[str] = ""
    columns: ClassVar[tuple[Column, ...]] = ()

    def weight(self, settings: QualitySettings, n_classes: int) -> float:
        """Its rough cost in forward passes, for one progress scale."""
        return 0.0

    def passes(self, settings: QualitySettings, n_classes: int, maps: Sequence[Passes]) -> Passes:
        """Its passes through the network for every method, given the passes of one map of each (``maps``)."""
        return Passes(0)

    def measure(self, context: MetricContext, progress: _progress.ProgressFn | None) -> dict[str, np.ndarray]:
        raise NotImplementedError


_METRICS: dict[str, type[QualityMetric]] = {}


def register_metric(cls: type[QualityMetric]) -> type[QualityMetric]:
    """Class decorator: add a quality metric to the registry under its ``name``."""
    if not cls.name or cls.name in _METRICS:
        raise ValueError(f"A quality metric needs a unique name; {cls.name!r} is empty or taken.")
    taken = {c.name for m in _METRICS.values() for c in m.columns}
    clash = [c.name for c in cls.columns if c.name in taken]
    if clash:
        raise ValueError(f"Quality metric {cls.name!r} reuses the column {clash[0]!r} of another metric.")
    _METRICS[cls.name] = cls
    return cls


def available_metrics() -> tuple[str, ...]:
    """Registered quality metrics, in registration order."""
    return tuple(_METRICS)


def metric_class(name: str) -> type[QualityMetric]:
    """The registered metric ``name`` (ValueError naming the known ones)."""
    if name not in _METRICS:
        raise ValueError(f"Unknown metric {name!r}; choose from {', '.join(_METRICS)}.")
    return _METRICS[name]


EXPLAIN_SECONDS = Column("seconds_explain", "Seconds / explanation", "one explanation of every class on the crop")


def metric_columns(*, case_table: bool = False) -> tuple[Column, ...]:
    """Every registered metric's columns in registry order, then the seconds of one explanation."""
    columns = [c for m in _METRICS.values() for c in m.columns if c.in_case_table or not case_table]
    return (*columns, EXPLAIN_SECONDS)


def row_fields() -> tuple[str, ...]:
    """The numbers of a :class:`QualityRow`: every metric column, the explanation's seconds, each metric's seconds."""
    return (*(c.name for c in metric_columns()), *(f"seconds_{name}" for name in _METRICS))


@dataclass(frozen=True)
class QualityRow(MeasuredValues):
    """Every quality metric of one method's map for one class (``values`` by :func:`row_fields`; nan: not run)."""

    method: str
    class_name: str
    values: Mapping[str, float]

    def as_dict(self) -> dict[str, Any]:
        """The row as one flat mapping (CSV columns)."""
        return {"method": self.method, "class_name": self.class_name, **self.values}


@dataclass(frozen=True)
class QualityResult:
    """Quality rows (one per method and class), the deletion curves, and the settings used."""

    rows: tuple[QualityRow, ...]
    curves: tuple = ()
    settings: dict = field(default_factory=dict)

    def to_csv(self, path: str | Path) -> Path:
        """Write the quality rows as CSV (atomic)."""
        return write_csv(self.rows, path)


def quality_metrics(
    problem: Problem,
    methods: Sequence[str | AttributionMethod],
    *,
    metrics: Sequence[str] | None = None,
    settings: QualitySettings = QualitySettings(),
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> QualityResult:
    """Every chosen metric (default: all registered) for every method: one row per method and class, plus curves."""
    chosen = [metric_class(name)() for name in (available_metrics() if metrics is None else metrics)]
    if not methods:
        raise ValueError("No attribution method to measure; give one or more methods.")
    n_classes = len(problem.class_names)
    weights = []
    for _ in methods:
        weights += [1, *(m.weight(settings, n_classes) for m in chosen)]
    parts = stages(progress, weights)
    rows: list[QualityRow] = []
    shared: dict = {}
    curves: list = []
    for method in methods:
        label = method_label(method)
        relevance, seconds_explain = relevance_of(problem, method, progress=next(parts), should_cancel=should_cancel)
        context = MetricContext(problem, method, label, relevance, settings, shared, curves, should_cancel)
        values = {name: np.full(n_classes, math.nan) for name in row_fields()}
        values["seconds_explain"] = np.full(n_classes, seconds_explain)
        for metric in chosen:
            start = time.perf_counter()
            measured = metric.measure(context, next(parts))
            values[f"seconds_{metric.name}"] = np.full(n_classes, time.perf_counter() - start)
            for column in metric.columns:
                values[column.name] = np.asarray(measured[column.name], dtype=float)
        for k, name in enumerate(problem.class_names):
            rows.append(QualityRow(label, name, {key: float(v[k]) for key, v in values.items()}))
    if progress is not None:
        progress(1000, 1000)
    record = dict(metrics=[m.name for m in chosen], **vars(settings))
    return QualityResult(tuple(rows), tuple(curves), record)
