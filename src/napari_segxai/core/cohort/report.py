"""Gather a cohort's finished cases and write its analysis: tables (CSV), the global importance chart (PNG), a summary (JSON)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..io.files import atomic_path, write_text
from .analysis import (TABLE_COLUMNS, ClassAnomalies, DiceCorrelation, anomaly_scores, cohort_table, dice_correlation,
                       flagged_cases, global_importance, importance_chart)
from .cases import CohortCase, find_cases
from .runner import FAILED, case_folder, read_record
from .subgroups import SubgroupTest, read_metadata, subgroup_tests

FILES = {
    "table": "cohort_table.csv",
    "global": "global_importance.csv",
    "chart": "global_importance.png",
    "anomalies": "anomalies.csv",
    "correlation": "dice_correlation.csv",
    "subgroups": "subgroups.csv",
    "failures": "failures.csv",
    "summary": "summary.json",
}
"""What :func:`analyse_cohort` writes into the output folder (subgroups only with metadata, the chart only with a finished case)."""


@dataclass(frozen=True, eq=False)
class CohortReport:
    """A cohort's analysis: the table, global importance, anomalies per class, Dice correlations, subgroup tests."""

    table: list[dict]
    global_importance: list[dict]
    anomalies: dict[str, ClassAnomalies]
    correlations: list[DiceCorrelation]
    subgroups: list[SubgroupTest]
    failures: dict[str, str]
    cases: tuple[str, ...]
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def finished(self) -> tuple[str, ...]:
        """Cases with results in the table."""
        return tuple(dict.fromkeys(r["case"] for r in self.table))


def _cell(value: Any) -> Any:
    """A CSV cell: floats with 6 significant digits, None and nan as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(path: str | Path, rows: Sequence[Mapping], columns: Sequence[str]) -> Path:
    """Write rows (dicts) as CSV with the given columns, atomically."""
    with atomic_path(path, suffix=".csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in columns})
    return Path(path)


def collect(out: str | Path, cases: Sequence[CohortCase]) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """The finished records of ``cases`` (in their order) and the recorded failure of each unfinished one."""
    records, failures = [], {}
    for case in cases:
        record = read_record(out, case)
        if record is not None:
            records.append(record)
            continue
        try:
            failed = json.loads((case_folder(out, case) / FAILED).read_text(encoding="utf-8"))
            failures[case.case_id] = (str(case.path), failed.get("error", "unknown error"))
        except (OSError, ValueError):
            failures[case.case_id] = (str(case.path), "not computed (the run was interrupted before this case finished)")
    return records, failures


def analyse_cohort(out: str | Path, cases: Sequence[CohortCase], *, metadata: str | Path | None = None,
                   contamination: float = 0.1, seed: int = 0, top: int = 5,
                   settings: Optional[Mapping] = None) -> CohortReport:
    """Analyse the finished cases of ``cases`` in ``out`` and write the tables, chart and summary (FILES) into ``out``."""
    out = Path(out)
    meta = read_metadata(metadata) if metadata is not None else None  # a bad CSV is reported before anything is written
    records, failures = collect(out, cases)
    table = cohort_table(records)
    overall = global_importance(table)
    anomalies = anomaly_scores(table, contamination=contamination, seed=seed)
    correlations = [dice_correlation(a) for a in anomalies.values()]
    notes = []
    for class_name in dict.fromkeys(r["class"] for r in table):
        if class_name not in anomalies:
            n = len({r["case"] for r in table if r["class"] == class_name})
            notes.append(f"class {class_name}: {n} case(s), too few for anomaly scores")
    tests: list[SubgroupTest] = []
    if meta is not None:
        tests, subgroup_notes = subgroup_tests(flagged_cases(anomalies), meta)
        notes += subgroup_notes
    files: dict[str, Path] = {}
    files["table"] = write_csv(out / FILES["table"], table, TABLE_COLUMNS)
    files["global"] = write_csv(out / FILES["global"], overall, ("class", "kind", "name", "mean", "sd", "n"))
    if overall:
        files["chart"] = importance_chart(overall, out / FILES["chart"])
    files["anomalies"] = write_csv(out / FILES["anomalies"], _anomaly_rows(anomalies),
                                   ("class", "rank", "case", "anomaly_score", "flagged", "dice"))
    files["correlation"] = write_csv(out / FILES["correlation"], [_correlation_row(c) for c in correlations],
                                     ("class", "n", "spearman_rho", "p_value", "note"))
    if meta is not None:
        files["subgroups"] = write_csv(out / FILES["subgroups"], [t.as_row() for t in tests],
                                       list(SubgroupTest.__dataclass_fields__))
    files["failures"] = write_csv(out / FILES["failures"],
                                  [{"case": c, "source": s, "error": e} for c, (s, e) in failures.items()],
                                  ("case", "source", "error"))
    report = CohortReport(table, overall, anomalies, correlations, tests, {c: e for c, (_, e) in failures.items()},
                          tuple(c.case_id for c in cases), notes, files)
    files["summary"] = out / FILES["summary"]
    write_text(files["summary"], json.dumps(_summary(report, records, top, contamination, seed, settings), indent=1) + "\n")
    return report


def _anomaly_rows(anomalies: Mapping[str, ClassAnomalies]) -> list[dict]:
    """One row per class x case, most anomalous first within each class."""
    rows = []
    for name, result in anomalies.items():
        for rank, i in enumerate(result.ranked(), start=1):
            dice = float(result.dice[i])
            rows.append({"class": name, "rank": rank, "case": result.cases[i], "anomaly_score": float(result.scores[i]),
                         "flagged": int(result.flagged[i]), "dice": None if math.isnan(dice) else dice})
    return rows


def _correlation_row(c: DiceCorrelation) -> dict:
    """A Dice correlation as a table row."""
    return {"class": c.class_name, "n": c.n, "spearman_rho": c.rho, "p_value": c.p_value, "note": c.note}


def _json_number(value: float) -> float | None:
    """A float for JSON (None for nan)."""
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _summary(report: CohortReport, records: list[dict], top: int, contamination: float, seed: int,
             settings: Optional[Mapping]) -> dict:
    """The run in one JSON document: counts, settings, top and bottom cases, correlations, subgroups, notes, files."""
    return {
        "cases": len(report.cases),
        "finished": len(report.finished),
        "failed": report.failures,
        "settings": dict(settings or (records[0].get("settings", {}) if records else {})),
        "anomaly_detection": {"method": "IsolationForest", "contamination": contamination, "seed": seed,
                              "features": "per class: e_{b->a} for every region b, then the modality shares"},
        "classes": {
            name: {
                "cases": len(result.cases),
                "features": [f"{kind}:{n}" for kind, n in result.features],
                "flagged": [c for c, f in zip(result.cases, result.flagged) if f],
                "most_anomalous": [{"case": c, "score": round(s, 6)} for c, s in result.top(top)],
                "least_anomalous": [{"case": c, "score": round(s, 6)} for c, s in result.bottom(top)],
            }
            for name, result in report.anomalies.items()
        },
        "dice_correlation": [{"class": c.class_name, "n": c.n, "spearman_rho": _json_number(c.rho),
                              "p_value": _json_number(c.p_value), "note": c.note} for c in report.correlations],
        "subgroups": [{k: (_json_number(v) if isinstance(v, float) else v) for k, v in t.as_row().items()}
                      for t in report.subgroups],
        "notes": report.notes,
        "files": {k: str(v) for k, v in report.files.items()},
    }


@dataclass(frozen=True)
class RankedCase:
    """One case in a class's anomaly ranking, read back from a cohort output folder."""

    class_name: str
    rank: int
    case: str
    score: float
    flagged: bool
    dice: Optional[float]
    source: Optional[Path]     # where the case was read from (None if its record is gone)


def _source(record: Optional[Mapping], case: str, found: dict[str, dict[str, Path]]) -> Optional[Path]:
    """Where a ranked case lies: its recorded path, or a DICOM study found again by its pseudonym."""
    if not record or not record.get("source"):
        return None
    folder = record.get("study_in")
    if not folder:
        return Path(record["source"])
    if folder not in found:
        found[folder] = {c.case_id: c.path for c in find_cases(folder)} if Path(folder).is_dir() else {}
    return found[folder].get(case)


def read_ranking(out: str | Path) -> tuple[dict[str, list[RankedCase]], dict]:
    """The anomaly ranking per class and the summary of a ``segxai cohort`` output folder (ValueError if it is not one)."""
    out = Path(out).expanduser()
    path = out / FILES["anomalies"]
    if not path.is_file() or not (out / FILES["summary"]).is_file():
        raise ValueError(f"{out} holds no {FILES['anomalies']} and {FILES['summary']}; choose the --out folder of a segxai cohort run.")
    summary = json.loads((out / FILES["summary"]).read_text(encoding="utf-8"))
    sources: dict[str, Optional[Path]] = {}
    found: dict[str, dict[str, Path]] = {}
    ranking: dict[str, list[RankedCase]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            case = row["case"]
            if case not in sources:
                sources[case] = _source(read_record(out, case), case, found)
            ranking.setdefault(row["class"], []).append(RankedCase(
                row["class"], int(row["rank"]), case, float(row["anomaly_score"]), row["flagged"] == "1",
                float(row["dice"]) if row["dice"] else None, sources[case]))
    return ranking, summary
