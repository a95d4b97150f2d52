"""Cohort-level RoI importance (Agg2Exp): the cohort table, global importance, Isolation Forest anomalies, Dice correlation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

TABLE_COLUMNS = ("case", "class", "kind", "name", "importance", "positive", "negative", "region_voxels", "dice")
"""Columns of the cohort table: one row per case x explained class x region (kind ``region``) or modality (kind ``modality``)."""

KINDS = ("region", "modality")
MIN_CASES = 3
"""Fewest cases with a class for which its anomaly scores (and a Dice correlation) are computed."""


def cohort_table(records: Iterable[Mapping]) -> list[dict]:
    """The cohort table (TABLE_COLUMNS) from per-case records: their RoI rows, with the class's Dice where a reference exists."""
    table = []
    for record in records:
        dice = record.get("dice") or {}
        for row in record["roi"]:
            kind = row["kind"]
            table.append({
                "case": record["case"],
                "class": row["class"],
                "kind": kind,
                "name": row["name"],
                "importance": float(row["importance"]),
                "positive": _number(row.get("positive")),
                "negative": _number(row.get("negative")),
                "region_voxels": int(row["voxels"]) if kind == "region" and row.get("voxels") is not None else None,
                "dice": _number(dice.get(row["class"])),
            })
    return table


def _number(value) -> float | None:
    """A float, or None for a missing value."""
    if value is None or value == "":
        return None
    return float(value)


def _ordered(values: Iterable) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def importance_matrix(table: Sequence[Mapping], class_name: str, kinds: Sequence[str] = KINDS) -> tuple[list[str], list[tuple[str, str]], np.ndarray]:
    """Cases, features (kind, name) and the (cases x features) importance of one class; 0 where a case lacks a region."""
    rows = [r for r in table if r["class"] == class_name and r["kind"] in kinds]
    cases = _ordered(r["case"] for r in rows)
    features = sorted(_ordered((r["kind"], r["name"]) for r in rows), key=lambda f: kinds.index(f[0]))
    case_index = {c: i for i, c in enumerate(cases)}
    feature_index = {f: j for j, f in enumerate(features)}
    matrix = np.zeros((len(cases), len(features)))
    for r in rows:
        matrix[case_index[r["case"]], feature_index[(r["kind"], r["name"])]] = float(r["importance"])
    return cases, features, matrix


def global_importance(table: Sequence[Mapping]) -> list[dict]:
    """Mean and SD (ddof 1) over cases of each e_{b->a} and modality share, per class: rows class, kind, name, mean, sd, n."""
    out = []
    for class_name in _ordered(r["class"] for r in table):
        cases, features, matrix = importance_matrix(table, class_name)
        n = len(cases)
        for j, (kind, name) in enumerate(features):
            values = matrix[:, j]
            out.append({
                "class": class_name, "kind": kind, "name": name,
                "mean": float(values.mean()), "sd": float(values.std(ddof=1)) if n > 1 else 0.0, "n": n,
            })
    return out


def importance_chart(rows: Sequence[Mapping], path, *, title: str = "Global RoI importance") -> Path:
    """A PNG bar chart of global importance (mean with SD error bars): regions per class, and modality shares."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.files import atomic_path

    classes = _ordered(r["class"] for r in rows)
    panels = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    figure = Figure(figsize=(max(7.0, 1.8 * len(classes) + 4.5), 3.4 * max(1, len(panels))), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
    labels = {"region": r"$e_{b \to a}$ (share of |relevance| in region b)", "modality": "share of |relevance| in modality"}
    colours = ["#4363d8", "#e6194b", "#3cb44b", "#ffe119", "#911eb4", "#f58231", "#42d4f4", "#f032e6", "#bfef45", "#469990"]
    for ax, kind in zip(axes, panels):
        names = _ordered(r["name"] for r in rows if r["kind"] == kind)
        width = 0.8 / max(1, len(names))
        for j, name in enumerate(names):
            found = {r["class"]: r for r in rows if r["kind"] == kind and r["name"] == name}
            x = np.arange(len(classes)) + (j - (len(names) - 1) / 2) * width
            means = [found[c]["mean"] if c in found else 0.0 for c in classes]
            sds = [found[c]["sd"] if c in found else 0.0 for c in classes]
            ax.bar(x, means, width, yerr=sds, capsize=2, label=name, color=colours[j % len(colours)], edgecolor="#333333", linewidth=0.4)
        ax.set_xticks(np.arange(len(classes)), [f"a = {c}" for c in classes])
        ax.set_ylabel(labels[kind], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=kind, title_fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    n = max((r["n"] for r in rows), default=0)
    axes[0].set_title(f"{title} (mean ± SD over {n} cases)", fontsize=10)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return Path(path)


@dataclass(frozen=True, eq=False)
class ClassAnomalies:
    """Isolation Forest anomaly scores of one class's importance vectors (higher = more anomalous)."""

    class_name: str
    cases: tuple[str, ...]
    features: tuple[tuple[str, str], ...]   # (kind, name) of each vector entry
    scores: np.ndarray                      # (n,) the Isolation Forest anomaly score s(x, n) in (0, 1]
    flagged: np.ndarray                     # (n,) bool: outliers at the chosen contamination
    dice: np.ndarray                        # (n,) Dice of the class against the reference; nan where none

    def ranked(self) -> list[int]:
        """Case indices from the most to the least anomalous (ties by case name)."""
        return sorted(range(len(self.cases)), key=lambda i: (-self.scores[i], self.cases[i]))

    def top(self, count: int = 5) -> list[tuple[str, float]]:
        """The ``count`` most anomalous cases with their scores."""
        return [(self.cases[i], float(self.scores[i])) for i in self.ranked()[:count]]

    def bottom(self, count: int = 5) -> list[tuple[str, float]]:
        """The ``count`` least anomalous (most typical) cases with their scores, most typical first."""
        return [(self.cases[i], float(self.scores[i])) for i in self.ranked()[::-1][:count]]


def anomaly_scores(table: Sequence[Mapping], *, contamination: float = 0.1, seed: int = 0,
                   kinds: Sequence[str] = KINDS, n_estimators: int = 256) -> dict[str, ClassAnomalies]:
    """Per class with at least MIN_CASES cases: a seeded Isolation Forest on the cases' importance vectors (regions and modality shares)."""
    from sklearn.ensemble import IsolationForest

    if not 0.0 < contamination <= 0.5:
        raise ValueError(f"The contamination (expected share of anomalous cases) must be in (0, 0.5], got {contamination}.")
    results = {}
    for class_name in _ordered(r["class"] for r in table):
        cases, features, matrix = importance_matrix(table, class_name, kinds)
        if len(cases) < MIN_CASES or not features:
            continue
        forest = IsolationForest(n_estimators=n_estimators, contamination=contamination, random_state=seed)
        forest.fit(matrix)
        dice_of = {r["case"]: r["dice"] for r in table if r["class"] == class_name and r.get("dice") is not None}
        results[class_name] = ClassAnomalies(
            class_name=class_name,
            cases=tuple(cases),
            features=tuple(features),
            scores=-forest.score_samples(matrix),
            flagged=forest.predict(matrix) == -1,
            dice=np.array([float(dice_of.get(c, math.nan)) for c in cases]),
        )
    return results


@dataclass(frozen=True)
class DiceCorrelation:
    """Spearman's correlation between a class's anomaly score and its Dice over the cases with a reference."""

    class_name: str
    n: int
    rho: float
    p_value: float
    note: str = ""


def dice_correlation(anomalies: ClassAnomalies) -> DiceCorrelation:
    """Spearman's rho (and its two-sided p-value) of anomaly score against Dice; nan with a note when it is undefined."""
    from scipy.stats import spearmanr

    known = np.isfinite(anomalies.dice)
    n = int(known.sum())
    name = anomalies.class_name
    if n < MIN_CASES:
        return DiceCorrelation(name, n, math.nan, math.nan, f"needs at least {MIN_CASES} cases with a reference segmentation")
    scores, dice = anomalies.scores[known], anomalies.dice[known]
    if np.ptp(dice) == 0 or np.ptp(scores) == 0:
        which = "Dice" if np.ptp(dice) == 0 else "the anomaly score"
        return DiceCorrelation(name, n, math.nan, math.nan, f"{which} is the same for every case")
    result = spearmanr(scores, dice)
    return DiceCorrelation(name, n, float(result.statistic), float(result.pvalue))


def flagged_cases(anomalies: Mapping[str, ClassAnomalies]) -> dict[str, bool]:
    """Each case scored for any class: whether it is flagged as anomalous for at least one class."""
    flagged: dict[str, bool] = {}
    for result in anomalies.values():
        for case, flag in zip(result.cases, result.flagged):
            flagged[case] = flagged.get(case, False) or bool(flag)
    return flagged
