"""Subgroup check (Agg2Exp): is a metadata subgroup (sex, age group, site, ...) over-represented among flagged cases?"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .cases import case_id

MIN_EXPECTED = 5.0
"""Chi-squared is used only when every expected count of the 2x2 table reaches this; Fisher's exact test otherwise."""


def read_metadata(path: str | Path) -> dict[str, dict[str, str]]:
    """Case metadata from a CSV with a ``case`` column (else the first column): case -> {column: value}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"The metadata file {path} does not exist; give a CSV with a case column and one column per attribute.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in (reader.fieldnames or []) if c is not None]
        if len(columns) < 2:
            raise ValueError(f"{path.name} needs a header with a case column and at least one attribute column (e.g. case,sex,site).")
        key = next((c for c in columns if c.strip().lower() == "case"), columns[0])
        metadata: dict[str, dict[str, str]] = {}
        for row in reader:
            name = (row.get(key) or "").strip()
            if not name:
                continue
            if name in metadata:
                raise ValueError(f"{path.name} lists case {name!r} twice; give one row per case.")
            metadata[name] = {c.strip(): (row.get(c) or "").strip() for c in columns if c != key}
    if not metadata:
        raise ValueError(f"{path.name} has no case rows; give one row per case under its header.")
    return metadata


def match_cases(metadata: Mapping[str, Mapping[str, str]], cases) -> dict[str, Mapping[str, str]]:
    """Metadata rows keyed by cohort case identifier (names in the CSV may be the raw folder or file names)."""
    wanted = set(cases)
    matched = {}
    for name, row in metadata.items():
        for candidate in (name, case_id(name), case_id(name.removesuffix(".nii.gz").removesuffix(".nii"))):
            if candidate in wanted:
                matched[candidate] = row
                break
    return matched


@dataclass(frozen=True)
class SubgroupTest:
    """One subgroup (column = value) against the rest of the cohort: counts and a one-sided over-representation test."""

    column: str
    value: str
    cases: int                 # cases in the subgroup
    flagged: int               # of them flagged
    other_cases: int           # cases outside the subgroup (with a value in this column)
    other_flagged: int         # of them flagged
    odds_ratio: float
    test: str                  # "fisher" or "chi-squared"
    p_value: float             # one-sided: the subgroup's flagged share is higher than the rest's
    p_adjusted: float          # Bonferroni over every subgroup tested

    def as_row(self) -> dict:
        """The test as a table row."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def over_representation(flagged: int, cases: int, other_flagged: int, other_cases: int) -> tuple[str, float, float]:
    """Test name, odds ratio and one-sided p-value that ``flagged/cases`` exceeds ``other_flagged/other_cases``."""
    from scipy.stats import chi2_contingency, fisher_exact

    table = np.array([[flagged, cases - flagged], [other_flagged, other_cases - other_flagged]])
    odds = fisher_exact(table, alternative="greater")
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    if table.sum() == 0 or (cols == 0).any() or (rows == 0).any():
        return "fisher", float(odds.statistic), 1.0
    expected = np.outer(rows, cols) / table.sum()
    if (expected < MIN_EXPECTED).any():
        return "fisher", float(odds.statistic), float(odds.pvalue)
    chi2 = chi2_contingency(table, correction=True)
    higher = flagged / cases > other_flagged / other_cases
    p = chi2.pvalue / 2 if higher else 1 - chi2.pvalue / 2
    return "chi-squared", float(odds.statistic), float(p)


def subgroup_tests(flagged: Mapping[str, bool], metadata: Mapping[str, Mapping[str, str]]) -> tuple[list[SubgroupTest], list[str]]:
    """One test per (column, value) among the cases with metadata; notes on what was left out."""
    notes = []
    matched = match_cases(metadata, flagged)
    missing = sorted(set(flagged) - set(matched))
    if missing:
        notes.append(f"{len(missing)} case(s) have no metadata row and are left out: {', '.join(missing[:10])}"
                     + (" ..." if len(missing) > 10 else ""))
    columns = list(dict.fromkeys(c for row in matched.values() for c in row))
    raw: list[tuple] = []
    for column in columns:
        values = {case: row.get(column, "") for case, row in matched.items() if row.get(column, "")}
        distinct = sorted(set(values.values()))
        if len(distinct) < 2:
            notes.append(f"column {column!r} has fewer than two values among the cases; not tested")
            continue
        if len(distinct) == len(values) and len(values) > 2:
            notes.append(f"column {column!r} has a different value for every case (an identifier?); not tested")
            continue
        for value in distinct:
            inside = [c for c, v in values.items() if v == value]
            outside = [c for c, v in values.items() if v != value]
            k_in = sum(bool(flagged[c]) for c in inside)
            k_out = sum(bool(flagged[c]) for c in outside)
            test, odds, p = over_representation(k_in, len(inside), k_out, len(outside))
            raw.append((column, value, len(inside), k_in, len(outside), k_out, odds, test, p))
    m = len(raw)
    tests = [SubgroupTest(*r, p_adjusted=min(1.0, r[-1] * m)) for r in raw]
    tests.sort(key=lambda t: (t.p_value if not math.isnan(t.p_value) else 2.0, t.column, t.value))
    return tests, notes
