"""``segxai report``: the one-page case report (HTML + PNG) on a toy model with a training record."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from _influence import blob_case, toy_model
from napari_segxai.cli import main


@pytest.fixture(scope="module")
def cases_cache(tmp_path_factory):
    """Regenerated training cases go to a temporary folder shared by this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGXAI_TRAINING_CASES", str(tmp_path_factory.mktemp("cases")))
        yield


@pytest.fixture
def setup(tmp_path, cases_cache):
    from napari_segxai.core.io.nifti import save_nifti

    card = toy_model(tmp_path / "toy")
    case = blob_case()
    folder = tmp_path / "case"
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"blobs_{modality}.nii.gz")
    save_nifti(case.label, case.affine, folder / "blobs_seg.nii.gz")
    return card, folder


def fingerprint(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_report_is_one_self_contained_page_with_every_section(setup, tmp_path, capsys):
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.model.inference import segment

    card, folder = setup
    before = fingerprint(folder)
    trust = tmp_path / "trust"
    assert main(["trust", str(folder), "--model", str(card), "--methods", "saliency", "--out", str(trust)]) == 0
    out = tmp_path / "report"
    assert main(["report", str(folder), "--model", str(card), "--method", "saliency", "--top", "2",
                 "--trust", str(trust), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"html: {out / 'report.html'}" in printed
    assert fingerprint(folder) == before  # the inputs are untouched
    assert sorted(p.name for p in out.iterdir()) == ["influence.csv", "report.html", "report.png", "roi.csv"]

    page = (out / "report.html").read_text(encoding="utf-8")
    for title in ("Segmentation", "Relevance", "RoI importance", "Training evidence (TracIn)",
                  "Can this method be trusted?", "Settings"):
        assert f"<h2>{title}</h2>" in page
    # self-contained: every image embedded, no script, no stylesheet or font from anywhere
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page

    # the numbers on the page are the ones the core computes
    case, model = load_case(folder), load_model_card(card)
    labels = segment(case, model, device="cpu").labels
    for info in model.classes[1:]:
        predicted, truth = labels == info.label, case.label == info.label
        if predicted.sum() + truth.sum():
            dice = 2 * np.logical_and(predicted, truth).sum() / (predicted.sum() + truth.sum())
            assert f"<td>{info.name}</td><td>{info.label}</td><td>{int(predicted.sum())}</td>" in page
            assert f"{dice:.3f}" in page
    verdicts = [r for r in csv.DictReader((trust / "sanity_verdicts.csv").open()) if r["method"] == "saliency"]
    assert verdicts and "Sanity check" in page and "Quality metrics" in page
    assert "saliency" in page and "top evidence per class" in page
    scores = list(csv.DictReader((out / "influence.csv").open()))
    assert scores and {r["test_class"] for r in scores} <= {"necrosis", "edema", "enhancing"}
    png = (out / "report.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 50_000


def test_report_without_influence_says_so_and_refuses_an_input_as_output(setup, tmp_path, capsys):
    card, folder = setup
    out = tmp_path / "report"
    assert main(["report", str(folder), "--model", str(card), "--no-influence", "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "TracIn was not asked for" in page and "Not computed: run `segxai trust" in page
    assert not (out / "influence.csv").exists()
    capsys.readouterr()

    victim = folder / "blobs_t1.nii.gz"
    before = victim.read_bytes()
    assert main(["report", str(folder), "--model", str(card), "--out", str(victim)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segxai report: error:") and "case's files" in err and err.count("\n") == 1
    assert victim.read_bytes() == before
    assert main(["report", str(folder), "--model", str(card), "--top", "0", "--out", str(out)]) == 2
    assert "--top must be 1 or more" in capsys.readouterr().err


def test_report_shows_where_the_model_is_unsure_when_asked(setup, tmp_path, capsys):
    card, folder = setup
    out = tmp_path / "report"
    assert main(["report", str(folder), "--model", str(card), "--method", "saliency", "--no-influence",
                 "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Where the model is unsure</h2>" in page and "Not asked for (segxai report --uncertainty" in page
    assert "Trust of saliency for this model: not checked" in page
    assert main(["report", str(folder), "--model", str(card), "--method", "saliency", "--no-influence",
                 "--uncertainty", "flips", "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    section = page.split("<h2>Where the model is unsure</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<img" in section and re.search(r"\d+ voxels have an entropy above 0.5 nats, \d+% of the predicted tumour",
                                            section)
    assert "flips ensemble of 8 runs" in section  # a 3D case: flipped along every subset of its three axes


def test_the_report_says_first_whether_the_case_is_like_the_training_cases(setup, tmp_path):
    card, folder = setup
    out = tmp_path / "report"
    assert main(["report", str(folder), "--model", str(card), "--method", "saliency", "--no-influence",
                 "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    first = page.split("<h2>", 2)[1]
    assert first.startswith("Finding</h2>") and "Domain check: " in first
    assert re.search(r"Domain check: (in distribution|out of distribution: )", first)


@pytest.mark.slow
def test_the_report_on_a_brain_without_tumour_says_first_that_it_is_outside_what_the_model_knows(tmp_path):
    """The bundled tumour model on the lesion-free template: the first section says out of distribution, and why."""
    from napari_segxai.core.io.nifti import save_nifti
    from napari_segxai.core.training.synth import lesion_free_case

    case = lesion_free_case()
    folder = tmp_path / case.name
    folder.mkdir()
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"{case.name}_{modality}.nii.gz")
    out = tmp_path / "report"
    assert main(["report", str(folder), "--method", "saliency", "--no-influence", "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    first = page.split("<h2>", 2)[1]
    assert first.startswith("Finding</h2>")
    assert "Domain check: out of distribution: " in first and "the model was never trained on a case without" in first


def test_evidence_whose_training_files_are_gone_is_listed_without_its_picture_and_a_note(tmp_path):
    """A model trained on files, moved to a machine without one training case's files (its TracIn scores are in
    the index): the report is still written, the case is still in the table, and one sentence says why it has no
    picture."""
    import shutil

    from _influence import files_model
    from napari_segxai.core.influence import TrainingCaseUnavailable, training_case
    from napari_segxai.core.io.nifti import save_nifti
    from napari_segxai.core.model.loading import load_model_card

    card_path, data = files_model(tmp_path / "toy", seeds=(61, 63))
    case, folder = blob_case(), tmp_path / "case"
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"blobs_{modality}.nii.gz")
    command = ["report", str(folder), "--model", str(card_path), "--method", "saliency", "--top", "2", "--out"]
    assert main(command + [str(tmp_path / "here")]) == 0  # builds the TracIn index and the domain reference
    rows = list(csv.DictReader((tmp_path / "here" / "influence.csv").open()))
    gone = max(rows, key=lambda r: float(r["score"]))["training_case"]  # a proponent the report shows
    shutil.rmtree(data / gone)
    card = load_model_card(card_path)
    with pytest.raises(TrainingCaseUnavailable, match=f"Training case {gone}: {gone}/{gone}_t1.nii.gz is not in"):
        training_case(card, ("synth-toy-00000061", "synth-toy-00000063").index(gone))

    assert main(command + [str(tmp_path / "away")]) == 0
    page = (tmp_path / "away" / "report.html").read_text(encoding="utf-8")
    note = f"No picture: {gone}&#x27;s files are not in {data.resolve()}, so that evidence is listed without one"
    assert page.count("No picture:") == 1 and note in page
    assert f"<td>{gone}</td>" in page  # still a row of the evidence table
    assert "no training region scored" not in page
    assert (tmp_path / "away" / "report.png").stat().st_size > 10_000
