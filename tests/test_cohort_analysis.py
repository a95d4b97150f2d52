"""Cohort analysis on hand-made tables with known answers: global importance, anomalies, Dice correlation, subgroups, report files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_segxai.core.cohort import (CohortCase, analyse_cohort, anomaly_scores, cohort_table, dice_correlation,
                                       flagged_cases, global_importance, importance_chart, importance_matrix,
                                       read_metadata, subgroup_tests)
from napari_segxai.core.cohort.analysis import ClassAnomalies
from napari_segxai.core.cohort.runner import DONE, FAILED, CohortSettings
from napari_segxai.core.cohort.subgroups import over_representation


def record(case, shares, *, dice=None, modality=None, klass="edema"):
    """A per-case record as a worker writes it: RoI rows of one class."""
    rows = [{"class": klass, "kind": "region", "name": n, "importance": v, "positive": v, "negative": 0.0, "voxels": 100}
            for n, v in shares.items()]
    rows += [{"class": klass, "kind": "modality", "name": n, "importance": v, "positive": v, "negative": 0.0}
             for n, v in (modality or {}).items()]
    return {"case": case, "roi": rows, "dice": None if dice is None else {klass: dice}}


def test_cohort_table_rows_and_dice():
    table = cohort_table([record("a", {"edema": 0.6, "background": 0.4}, dice=0.8, modality={"flair": 0.7, "t1": 0.3}),
                          record("b", {"edema": 1.0})])
    assert [(r["case"], r["kind"], r["name"]) for r in table] == [
        ("a", "region", "edema"), ("a", "region", "background"), ("a", "modality", "flair"), ("a", "modality", "t1"),
        ("b", "region", "edema")]
    assert [r["dice"] for r in table] == [0.8, 0.8, 0.8, 0.8, None]
    assert table[0]["region_voxels"] == 100 and table[2]["region_voxels"] is None


def test_global_importance_mean_sd_and_missing_region_counts_as_zero():
    table = cohort_table([record("a", {"edema": 0.5, "background": 0.5}), record("b", {"edema": 0.7, "background": 0.3}),
                          record("c", {"edema": 0.9})])  # c predicts no background region: its e is 0 there
    rows = {(r["kind"], r["name"]): r for r in global_importance(table)}
    assert rows[("region", "edema")]["mean"] == pytest.approx(0.7)
    assert rows[("region", "edema")]["sd"] == pytest.approx(0.2)
    assert rows[("region", "background")]["mean"] == pytest.approx(0.8 / 3)
    assert rows[("region", "background")]["sd"] == pytest.approx(np.std([0.5, 0.3, 0.0], ddof=1))
    assert {r["n"] for r in rows.values()} == {3}
    cases, features, matrix = importance_matrix(table, "edema")
    assert cases == ["a", "b", "c"] and features == [("region", "edema"), ("region", "background")]
    assert matrix[2].tolist() == [0.9, 0.0]


def typical_cohort(n=12, odd=("case-07",), seed=1):
    """n cases whose edema relevance sits 70% in the edema, 25% in the core, 5% in the background, mostly on FLAIR; odd ones on T1 in the background."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        name = f"case-{i:02d}"
        if name in odd:
            shares, modality, dice = {"edema": 0.2, "core": 0.1, "background": 0.7}, {"flair": 0.1, "t1": 0.9}, 0.3
        else:
            e = 0.7 + rng.normal(0, 0.03)
            shares = {"edema": e, "core": 0.25 + rng.normal(0, 0.02), "background": 1 - e - 0.25}
            f = 0.8 + rng.normal(0, 0.03)
            modality, dice = {"flair": f, "t1": 1 - f}, 0.85 + rng.normal(0, 0.03)
        records.append(record(name, shares, modality=modality, dice=dice))
    return records


def test_isolation_forest_ranks_the_odd_case_first_and_is_seeded():
    table = cohort_table(typical_cohort())
    first = anomaly_scores(table, contamination=0.1, seed=0)["edema"]
    again = anomaly_scores(table, contamination=0.1, seed=0)["edema"]
    assert first.top(1)[0][0] == "case-07"
    assert first.flagged[first.cases.index("case-07")]
    assert first.flagged.sum() <= 2
    np.testing.assert_array_equal(first.scores, again.scores)
    assert first.bottom(3)[0][0] != "case-07" and len(first.bottom(3)) == 3
    assert first.features == (("region", "edema"), ("region", "core"), ("region", "background"),
                              ("modality", "flair"), ("modality", "t1"))
    assert flagged_cases({"edema": first})["case-07"] is True


def test_two_odd_cases_lead_the_ranking():
    table = cohort_table(typical_cohort(odd=("case-03", "case-09")))
    ranked = [c for c, _ in anomaly_scores(table, contamination=0.2)["edema"].top(2)]
    assert sorted(ranked) == ["case-03", "case-09"]


def test_too_few_cases_give_no_scores_and_bad_contamination_is_refused():
    table = cohort_table(typical_cohort(n=2, odd=()))
    assert anomaly_scores(table) == {}
    with pytest.raises(ValueError, match="contamination"):
        anomaly_scores(cohort_table(typical_cohort()), contamination=0.7)


def anomalies(scores, dice):
    n = len(scores)
    return ClassAnomalies("edema", tuple(f"c{i}" for i in range(n)), (("region", "edema"),), np.asarray(scores, float),
                          np.zeros(n, bool), np.asarray(dice, float))


def test_spearman_of_anomaly_score_and_dice():
    perfect = dice_correlation(anomalies([0.4, 0.5, 0.6, 0.7, 0.8], [0.9, 0.8, 0.7, 0.6, 0.1]))
    assert perfect.rho == pytest.approx(-1.0) and perfect.n == 5
    assert perfect.p_value < 0.05
    # one swapped pair: rho = 1 - 6*2/(5*24) = 0.9
    assert dice_correlation(anomalies([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])).rho == pytest.approx(0.9)
    no_reference = dice_correlation(anomalies([0.4, 0.5, 0.6, 0.7], [math.nan, 0.8, 0.7, math.nan]))
    assert no_reference.n == 2 and math.isnan(no_reference.rho) and "at least" in no_reference.note
    constant = dice_correlation(anomalies([0.4, 0.5, 0.6], [0.7, 0.7, 0.7]))
    assert math.isnan(constant.p_value) and "Dice is the same" in constant.note


def test_fisher_over_representation_known_counts():
    # 4 of 5 site-A cases flagged, 0 of 10 elsewhere: P = C(5,4) C(10,0) / C(15,4) = 5 / 1365
    test, odds, p = over_representation(4, 5, 0, 10)
    assert test == "fisher" and p == pytest.approx(5 / 1365) and odds == math.inf
    # under-represented: p near 1
    assert over_representation(0, 5, 4, 10)[2] == pytest.approx(1.0)


def test_chi_squared_when_counts_are_large():
    from scipy.stats import chi2_contingency

    test, odds, p = over_representation(20, 40, 8, 40)
    assert test == "chi-squared"
    assert p == pytest.approx(chi2_contingency([[20, 20], [8, 32]]).pvalue / 2)
    assert odds == pytest.approx((20 * 32) / (20 * 8))


def test_subgroup_tests_with_counts_and_notes(tmp_path):
    path = tmp_path / "meta.csv"
    lines = ["case,site,sex,age"]
    flagged = {}
    for i in range(15):
        name = f"case {i:02d}"  # raw names; the cohort's identifiers are case_id() of them
        lines.append(f"{name},{'A' if i < 5 else 'B'},{'F' if i % 2 else 'M'},{20 + i}")
        flagged[f"case_{i:02d}"] = i < 4
    flagged["case_99"] = False  # no metadata row
    path.write_text("\n".join(lines) + "\n")
    tests, notes = subgroup_tests(flagged, read_metadata(path))
    best = tests[0]
    assert (best.column, best.value, best.cases, best.flagged, best.other_cases, best.other_flagged) == ("site", "A", 5, 4, 10, 0)
    assert best.p_value == pytest.approx(5 / 1365)
    assert best.p_adjusted == pytest.approx(min(1.0, 4 * 5 / 1365))  # 4 subgroups: site A, B; sex F, M
    assert {(t.column, t.value) for t in tests} == {("site", "A"), ("site", "B"), ("sex", "F"), ("sex", "M")}
    assert any("age" in n and "every case" in n for n in notes)
    assert any("case_99" in n for n in notes)


def test_metadata_mistakes_are_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_metadata(tmp_path / "missing.csv")
    one_column = tmp_path / "one.csv"
    one_column.write_text("case\na\n")
    with pytest.raises(ValueError, match="attribute column"):
        read_metadata(one_column)
    twice = tmp_path / "twice.csv"
    twice.write_text("case,site\na,X\na,Y\n")
    with pytest.raises(ValueError, match="twice"):
        read_metadata(twice)


def test_importance_chart_is_a_png(tmp_path):
    table = cohort_table(typical_cohort())
    path = importance_chart(global_importance(table), tmp_path / "chart.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_report_from_case_folders(tmp_path):
    """analyse_cohort reads done markers and failures from OUT/cases and writes every table."""
    records = typical_cohort()
    cases = []
    settings = CohortSettings(model_card=str(tmp_path / "card.yaml")).fingerprint()
    for r in records:
        folder = tmp_path / "out" / "cases" / r["case"]
        folder.mkdir(parents=True)
        (folder / DONE).write_text(json.dumps(dict(r, settings=settings, status="done")))
        cases.append(CohortCase(r["case"], tmp_path / r["case"]))
    broken = tmp_path / "out" / "cases" / "broken"
    broken.mkdir()
    (broken / FAILED).write_text(json.dumps({"case": "broken", "status": "failed", "error": "Cannot read x.nii.gz as NIfTI."}))
    cases += [CohortCase("broken", tmp_path / "broken"), CohortCase("never-run", tmp_path / "never-run")]
    meta = tmp_path / "meta.csv"
    meta.write_text("case,site\n" + "".join(f"{r['case']},{'X' if r['case'] == 'case-07' else 'Y'}\n" for r in records))
    report = analyse_cohort(tmp_path / "out", cases, metadata=meta, contamination=0.1, top=3)
    out = tmp_path / "out"
    for name in ("cohort_table.csv", "global_importance.csv", "global_importance.png", "anomalies.csv",
                 "dice_correlation.csv", "subgroups.csv", "failures.csv", "summary.json"):
        assert (out / name).is_file(), name
    with open(out / "cohort_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 * 5 and {r["case"] for r in rows} == {r["case"] for r in records}
    with open(out / "anomalies.csv") as f:
        ranked = list(csv.DictReader(f))
    assert ranked[0]["case"] == "case-07" and ranked[0]["rank"] == "1" and ranked[0]["flagged"] == "1"
    with open(out / "failures.csv") as f:
        failures = {r["case"]: r["error"] for r in csv.DictReader(f)}
    assert failures["broken"] == "Cannot read x.nii.gz as NIfTI."
    assert "interrupted" in failures["never-run"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == 12 and summary["cases"] == 14
    assert summary["classes"]["edema"]["most_anomalous"][0]["case"] == "case-07"
    corr = summary["dice_correlation"][0]
    assert corr["n"] == 12 and corr["spearman_rho"] < -0.3  # the odd case has the lowest Dice
    site_x = next(t for t in report.subgroups if t.value == "X")
    assert (site_x.cases, site_x.flagged) == (1, 1)
    assert report.finished == tuple(r["case"] for r in records)
