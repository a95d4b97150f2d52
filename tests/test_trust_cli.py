"""``segxai trust``: end to end on a tiny case folder with a tiny card; user errors."""

from __future__ import annotations

import csv
import json

import pytest

from _cards import lps_affine, write_card
from napari_segxai.cli import main

AFFINE = lps_affine((2.0, 2.0, 2.0))


@pytest.fixture
def case_dir(tiny_case_dir):
    folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 16), name="Case001")
    truth = {"modality_signature": {"edema": {"t1": 0.2, "flair": 2.0}, "core": {"t1": 1.5, "flair": 0.4}}}
    (folder / "ground_truth.json").write_text(json.dumps(truth))
    return folder


@pytest.fixture
def card(tmp_path):
    return write_card(tmp_path / "model")


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_trust_writes_tables_plots_and_a_record(tmp_path, case_dir, card, capsys):
    out = tmp_path / "out"
    inputs = {p: p.read_bytes() for p in case_dir.iterdir()}
    code = main(["trust", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu",
                 "--methods", "saliency,integrated_gradients", "--param", "integrated_gradients:steps=4",
                 "--classes", "edema", "--ground-truth", "--carrier", "healthy", "--max-steps", "2", "--modes", "cascading",
                 "--subsets", "6", "--deletion-steps", "4", "--noise-samples", "1", "--margin", "2"])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["deletion.png", "groundtruth_modality.csv", "groundtruth_precision.csv", "metrics.csv",
                     "quality.csv", "sanity.csv", "sanity.png", "sanity_verdicts.csv", "trust.json"]
    record = json.loads((out / "trust.json").read_text())
    assert record["methods"]["integrated_gradients"]["steps"] == 4 and record["classes"] == ["edema"]
    sanity = _rows(out / "sanity.csv")
    assert {r["mode"] for r in sanity} == {"none", "cascading"} and len(sanity) == 2 * 3
    quality = _rows(out / "quality.csv")
    assert [(r["method"], r["class_name"]) for r in quality][:2] == [("saliency", "edema"), ("integrated_gradients", "edema")]
    assert float(quality[0]["faithfulness"]) == float(_rows(out / "metrics.csv")[0]["faithfulness"])
    metrics = _rows(out / "metrics.csv")
    assert [r["method"] for r in metrics] == ["saliency", "integrated_gradients"]
    precision = _rows(out / "groundtruth_precision.csv")
    assert {r["method"] for r in precision} == {"saliency", "integrated_gradients", "sobel", "laplace"}
    assert all(0.0 <= float(r["precision"]) <= 1.0 for r in precision)
    modality = _rows(out / "groundtruth_modality.csv")
    assert {r["carrier"] for r in modality} == {"flair"}
    printed = capsys.readouterr().out
    assert "Model parameter randomisation" in printed and "Explanation precision" in printed
    # the cost was said before the measures' tables and kept: one timed pass of the crop, passes per measure
    assert printed.index("Estimated cost: trust check of saliency, integrated_gradients") < printed.index("Model parameter")
    parts = {p["method"]: p for p in record["cost_estimate"]["parts"]}
    assert parts["faithfulness"]["forward_passes"] == 2 * (6 + 1) and parts["deletion"]["forward_passes"] == 5 * 3
    assert record["cost_estimate"]["seconds"] > 0 and "ground truth" in parts
    assert {p: p.read_bytes() for p in case_dir.iterdir()} == inputs


@pytest.mark.parametrize("extra, message", [
    (["--methods", "tea_leaves"], "--methods"),
    (["--param", "saliency:steps=3", "--methods", "integrated_gradients"], "METHOD:KEY=VALUE"),
    (["--checks", "vibes"], "--checks"),
    (["--max-steps", "0"], "--max-steps"),
])
def test_trust_user_errors_are_one_sentence(tmp_path, case_dir, card, capsys, extra, message):
    code = main(["trust", str(case_dir), "--model", str(card), "--out", str(tmp_path / "o"), "--device", "cpu", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_ground_truth_needs_a_generated_case(tmp_path, tiny_case_dir, card, capsys):
    folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, name="Plain")
    code = main(["trust", str(folder), "--model", str(card), "--out", str(tmp_path / "o"), "--ground-truth"])
    assert code == 2 and "ground_truth.json" in capsys.readouterr().err
