"""``segxai evaluate --methods``: explanation quality over several tiny cases with a tiny card; the core rows behind it."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from _cards import lps_affine, write_card
from _trust import InputItself, unet_problem
from napari_segxai.cli import main
from napari_segxai.core.trust import TrustSettings, assess_problem, quality_rows, quality_summary
from napari_segxai.core.trust.assess import case_measures

AFFINE = lps_affine((2.0, 2.0, 2.0))
SIGNATURE = {"edema": {"t1": 0.2, "flair": 2.0}, "core": {"t1": 1.5, "flair": 0.4}}
FAST = ["--device", "cpu", "--classes", "edema", "--modes", "cascading", "--max-steps", "1", "--subsets", "4",
        "--deletion-steps", "2", "--noise-samples", "1", "--margin", "2"]


@pytest.fixture
def card(tmp_path):
    return write_card(tmp_path / "model")


@pytest.fixture
def cases(tiny_case_dir, tmp_path):
    """A folder of three cases (two 'generated', with ground_truth.json; one plain) and one case lacking a modality."""
    root = tmp_path / "cases"
    root.mkdir()
    for k, generated in enumerate((True, True, False)):
        folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, name=f"Case00{k}", seed=k)
        if generated:
            (folder / "ground_truth.json").write_text(json.dumps({"modality_signature": SIGNATURE}))
        folder.rename(root / folder.name)
    broken = tiny_case_dir(modalities=("t1",), affine=AFFINE, name="NoFlair")
    return root, broken


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_quality_over_cases_prints_the_table_and_writes_rows_summary_and_plot(tmp_path, card, cases, capsys):
    root, broken = cases
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    code = main(["evaluate", "--model", str(card), "--cases", str(root), str(broken), "--methods", "saliency",
                 "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["quality.csv", "quality.json", "quality.png", "quality_summary.csv"]
    # the case without FLAIR is reported in one line and skipped
    skipped = [line for line in captured.err.splitlines() if line.startswith("segxai evaluate: skipped")]
    assert len(skipped) == 1 and str(broken) in skipped[0] and "flair" in skipped[0].lower()

    rows = _rows(out / "quality.csv")
    # one row per case, method and class, and the two edge-filter baselines on each generated case
    assert [(r["case"], r["method"]) for r in rows if r["method"] == "saliency"] == \
        [("Case000", "saliency"), ("Case001", "saliency"), ("Case002", "saliency")]
    assert sorted((r["case"], r["method"]) for r in rows if r["method"] != "saliency") == \
        [("Case000", "laplace"), ("Case000", "sobel"), ("Case001", "laplace"), ("Case001", "sobel")]
    assert {r["class_name"] for r in rows} == {"edema"}
    by_case = {r["case"]: r for r in rows if r["method"] == "saliency"}
    assert all(0.0 <= float(by_case[c]["precision"]) <= 1.0 for c in ("Case000", "Case001"))
    assert math.isnan(float(by_case["Case002"]["precision"])) and math.isnan(float(by_case["Case002"]["carrier_share"]))
    assert all(r["randomisation_passes"] in ("0.0", "1.0") for r in by_case.values())

    summary = _rows(out / "quality_summary.csv")
    assert {(s["group"], s["measure"]) for s in summary} == {(m, x) for m in ("saliency", "sobel", "laplace") for x in case_measures()}
    for s in summary:   # mean and sample SD over the per-case rows, as numpy computes them
        values = np.array([float(r[s["measure"]]) for r in rows if r["method"] == s["group"]])
        values = values[np.isfinite(values)]
        assert int(s["n"]) == values.size
        if values.size:
            assert float(s["mean"]) == pytest.approx(values.mean(), rel=1e-12, abs=1e-15)
        if values.size > 1:
            assert float(s["sd"]) == pytest.approx(values.std(ddof=1), rel=1e-12, abs=1e-15)
    assert [s["n"] for s in summary if s["group"] == "saliency" and s["measure"] == "seconds_explain"] == ["3"]
    assert [s["n"] for s in summary if s["group"] == "saliency" and s["measure"] == "precision"] == ["2"]

    table = captured.out
    assert "over 3 cases" in table and "measure" in table and "saliency" in table and "sobel" in table
    assert any(line.startswith("precision ") and "±" in line for line in table.splitlines())
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "quality.json").read_text())
    assert [c["case"] for c in record["cases"]] == ["Case000", "Case001", "Case002"]
    assert [c["ground_truth"] for c in record["cases"]] == [True, True, False]
    assert list(record["failed"]) == [str(broken)] and record["settings"]["max_steps"] == 1
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_cases_without_methods_give_dice_against_their_labels(tmp_path, card, cases, capsys):
    root, _ = cases
    out = tmp_path / "dice"
    assert main(["evaluate", "--model", str(card), "--cases", str(root), "--out", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert "generated" not in results   # --cases alone: no held-out generated cases unless --count asks
    assert [r["case"] for r in results["real"]["rows"]] == ["Case000", "Case001", "Case002"]
    assert all(0.0 <= r["whole_tumour"] <= 1.0 and 0.0 <= r["false_positive_share"] <= 1.0 for r in results["real"]["rows"])
    assert "of the predicted tumour apart from the reference's" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--methods", "tea_leaves", "--cases", "CASES"], "--methods"),
    (["--methods", "saliency"], "--cases"),
    (["--methods", "saliency", "--cases", "CASES", "--count", "3"], "--count"),
    (["--methods", "saliency", "--cases", "CASES", "--checks", "vibes"], "--checks"),
    (["--methods", "saliency", "--cases", "CASES", "--classes", "unicorn"], "no class 'unicorn'"),
    (["--methods", "saliency", "--cases", "/no/such/case"], "does not exist"),
    (["--methods", "saliency", "--cases", "BROKEN"], "No case could be measured"),
    (["--cases", "FILE"], "single file"),
])
def test_user_errors_are_one_sentence(tmp_path, card, cases, capsys, extra, message):
    root, broken = cases
    a_file = next(broken.iterdir())
    swap = {"CASES": str(root), "BROKEN": str(broken), "FILE": str(a_file)}
    code = main(["evaluate", "--model", str(card), "--out", str(tmp_path / "o"), *FAST, *[swap.get(e, e) for e in extra]])
    assert code == 2
    err = capsys.readouterr().err   # besides the progress bar: the skipped cases, then one error sentence
    errors = [line for line in err.splitlines() if line.startswith("segxai evaluate: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_quality_rows_and_summary_of_one_problem():
    problem = unet_problem()
    trust = assess_problem(problem, ["saliency", InputItself()],
                           settings=TrustSettings(checks=("sanity", "metrics"), modes=("cascading",), max_steps=2,
                                                  metrics=("complexity",)))
    rows = quality_rows(trust, "toy")
    assert [(r.case, r.method, r.class_name) for r in rows] == [
        ("toy", "saliency", "one"), ("toy", "saliency", "two"), ("toy", "input_itself", "one"), ("toy", "input_itself", "two")]
    blind = [r for r in rows if r.method == "input_itself"]
    assert all(r.randomisation_passes == 0.0 and r.randomisation_spearman == pytest.approx(1.0) for r in blind)
    assert all(math.isnan(r.faithfulness) and math.isnan(r.precision) and np.isfinite(r.entropy_normalised) for r in rows)
    summary = {(s.group, s.measure): s for s in quality_summary(rows)}
    entropy = [r.entropy_normalised for r in rows if r.method == "saliency"]
    assert summary[("saliency", "entropy_normalised")].mean == pytest.approx(np.mean(entropy))
    assert summary[("saliency", "entropy_normalised")].sd == pytest.approx(np.std(entropy, ddof=1))
    assert summary[("saliency", "faithfulness")].n == 0
    with pytest.raises(ValueError, match="true label"):
        assess_problem(problem, ["saliency"], ground_truth=True)
    with pytest.raises(ValueError, match="Unknown trust check"):
        TrustSettings(checks=("vibes",))


def test_data_randomisation_over_cases_fills_the_data_column(tmp_path, card, cases, capsys):
    root, _ = cases
    out = tmp_path / "out"
    code = main(["evaluate", "--model", str(card), "--cases", str(root / "Case002"), "--methods", "saliency",
                 "--checks", "sanity,data", "--data-steps", "2", "--data-cases", "2", "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    (row,) = _rows(out / "quality.csv")
    assert row["case"] == "Case002" and -1.0 <= float(row["data_spearman"]) <= 1.0
    assert math.isnan(float(row["faithfulness"]))     # the metrics were not asked for
    summary = {s["measure"]: s for s in _rows(out / "quality_summary.csv")}
    assert int(summary["data_spearman"]["n"]) == 1
    assert float(summary["data_spearman"]["mean"]) == pytest.approx(float(row["data_spearman"]), rel=1e-12)
