"""Rows of trust measures (frozen dataclasses, or rows with ``as_dict()``) as CSV files and plain-text tables."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..io.files import write_text


class MeasuredValues:
    """Mixin for rows holding registry-driven numbers in ``values``: each readable as an attribute (``row.spearman``)."""

    def __getattr__(self, name: str) -> float:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)


def row_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows as dictionaries in field order: a row's own ``as_dict()`` (registry-driven rows), else its dataclass fields."""
    return [row.as_dict() if hasattr(row, "as_dict") else dataclasses.asdict(row) for row in rows]


def write_csv(rows: Sequence[Any], path: str | Path) -> Path:
    """Write dataclass rows as a CSV file (one column per field, floats in full precision), atomically."""
    if not rows:
        raise ValueError(f"There are no rows to write to {path}; run at least one measure.")
    buffer = io.StringIO()
    dicts = row_dicts(rows)
    fields = list(dicts[0])
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in dicts:
        writer.writerow({k: repr(float(v)) if isinstance(v, float) else str(v) for k, v in row.items()})
    return write_text(path, buffer.getvalue())


def format_table(rows: Sequence[Any], columns: Sequence[str] | None = None) -> str:
    """Dataclass rows as an aligned plain-text table (numbers with 3 significant decimals)."""
    if not rows:
        return "(no rows)"
    columns = list(columns) if columns else list(row_dicts(rows[:1])[0])
    cells = [[_cell(getattr(row, c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


@dataclass(frozen=True)
class SummaryRow:
    """Mean, standard deviation and count of one measure over the rows of one group (e.g. over cases)."""

    group: str          # the grouping fields' values, joined by " / "
    measure: str
    mean: float
    sd: float           # sample standard deviation (nan for one value)
    n: int


def summarise(rows: Sequence[Any], by: Sequence[str], measures: Sequence[str]) -> list[SummaryRow]:
    """Mean and spread of numeric fields of dataclass rows, grouped by other fields (nan values left out)."""
    groups: dict[tuple, list[Any]] = {}
    for row in rows:
        groups.setdefault(tuple(getattr(row, f) for f in by), []).append(row)
    out = []
    for key, members in groups.items():
        for measure in measures:
            values = np.array([float(getattr(r, measure)) for r in members])
            values = values[np.isfinite(values)]
            mean = float(values.mean()) if values.size else float("nan")
            sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
            out.append(SummaryRow(" / ".join(map(str, key)), measure, mean, sd, int(values.size)))
    return out


def summary_table(summary: Sequence[SummaryRow]) -> str:
    """Summary rows as a plain-text table: a row per measure, a column per group, cells "mean ± sd (n)"; measures never measured left out."""
    if not summary:
        return "(no rows)"
    groups = list(dict.fromkeys(r.group for r in summary))
    cells: dict[str, dict[str, str]] = {}
    for r in summary:
        if r.n:
            text = _cell(r.mean) if r.n == 1 else f"{_cell(r.mean)} ± {_cell(r.sd)}"
            cells.setdefault(r.measure, {})[r.group] = f"{text} ({r.n})"
    header = ["measure", *groups]
    lines = [[m, *(cells[m].get(g, "-") for g in groups)] for m in dict.fromkeys(r.measure for r in summary) if m in cells]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *lines])


def _cell(value: Any) -> str:
    """A value as table text: floats with four significant digits, nan as 'nan'."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
