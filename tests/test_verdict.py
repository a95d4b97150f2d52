"""The trust verdict of a model and method: measured once, cached by the weights' digest, shown beside maps."""

from __future__ import annotations

import shutil

import pytest

from _cards import lps_affine, write_card
from napari_segxai.cli import main
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.trust.verdict import NOT_CHECKED, badge, read_verdict, verdict_path, model_digest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_explain_says_not_checked_then_measures_once_and_every_later_map_shows_the_verdict(
        tmp_path, tiny_case_dir, cache, capsys):
    case = tiny_case_dir(modalities=("t1", "flair"), affine=lps_affine((1.0, 1.0, 2.0)), shape=(16, 16, 12))
    card_path = write_card(tmp_path / "model")
    explain = ["explain", str(case), "--model", str(card_path), "--device", "cpu", "--classes", "edema"]
    assert main([*explain, "--out", str(tmp_path / "a")]) == 0
    assert "Trust of saliency for this model: not checked; add --check-trust" in capsys.readouterr().out
    card = load_model_card(card_path)
    assert badge(card, "saliency") == NOT_CHECKED

    assert main([*explain, "--check-trust", "--out", str(tmp_path / "b")]) == 0
    said = capsys.readouterr().out
    verdict = read_verdict(card, "saliency")
    assert verdict is not None and verdict.weights_sha256 == model_digest(card)
    assert verdict.sentence() in said and verdict.badge() in said
    assert ("randomisation passed" in verdict.badge()) == (verdict.randomisation_spearman < 0.5)
    assert verdict_path(verdict.weights_sha256, "saliency").is_file()

    assert main([*explain, "--out", str(tmp_path / "c")]) == 0  # cached: shown without measuring again
    assert verdict.sentence() in capsys.readouterr().out

    other = tmp_path / "other"  # the same card with other weights: its own, unmeasured verdict
    shutil.copytree(card_path.parent, other)
    weights = next(other.glob("*.safetensors"), None) or next(other.glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert badge(load_model_card(other / card_path.name), "saliency") == NOT_CHECKED


def test_segxai_trust_keeps_its_verdicts_for_the_viewer_and_reports(tmp_path, tiny_case_dir, cache, capsys):
    case = tiny_case_dir(modalities=("t1", "flair"), affine=lps_affine((1.0, 1.0, 2.0)), shape=(16, 16, 12))
    card_path = write_card(tmp_path / "model")
    assert main(["trust", str(case), "--model", str(card_path), "--methods", "saliency,gradient_x_input",
                 "--device", "cpu", "--max-steps", "2", "--out", str(tmp_path / "trust")]) == 0
    said = capsys.readouterr().out
    card = load_model_card(card_path)
    for method in ("saliency", "gradient_x_input"):
        verdict = read_verdict(card, method)
        assert verdict is not None and f"{method}: {verdict.badge()}" in said
