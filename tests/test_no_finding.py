""""No finding" is a result: a class the model does not predict is skipped by name, everywhere; counts by name and label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _no_finding import write_silent_card
from napari_segxai.core.attribution import explain_case, predicted_target
from napari_segxai.core.attribution.targets import Target, skipped_line
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.loading import load_model_card


@pytest.fixture
def case(tiny_case_dir):
    return load_case(tiny_case_dir(modalities=("t1", "flair"), shape=(16, 16, 12), name="Case001"))


@pytest.fixture
def edema_only(tmp_path):
    """A card that predicts edema everywhere and never core (nor background)."""
    return load_model_card(write_silent_card(tmp_path / "edema_only", silent=("background", "core")))


@pytest.fixture
def no_tumour(tmp_path):
    """A card that predicts background everywhere."""
    return load_model_card(write_silent_card(tmp_path / "no_tumour", silent=("edema", "core")))


def test_predicted_target_skips_an_empty_class_by_name_and_counts_by_label():
    logits = torch.zeros(1, 3, 4, 4, 4)
    logits[0, 1, :2] = 5.0  # class 1 predicted on half the volume, class 2 nowhere
    target = predicted_target(logits, (1, 2), class_names=("background", "edema", "core"),
                              label_values=(0, 2, 4), skip_empty=True)
    assert target.classes == (1,) and target.skipped == ("core",)
    assert target.describe() == "sum of class logits over the predicted region (edema (label 2): 32 voxels)"
    assert skipped_line(target.skipped) == "no core predicted: skipped"
    with pytest.raises(ValueError, match="The target region of core"):
        predicted_target(logits, (1, 2), class_names=("background", "edema", "core"))
    with pytest.raises(ValueError, match="Nothing to explain: no core is predicted"):
        predicted_target(logits, (2,), class_names=("background", "edema", "core"), skip_empty=True)


def test_target_without_names_says_output_index_and_subset_keeps_names():
    masks = np.zeros((2, 3, 3, 3), bool)
    masks[0, 0] = masks[1, 1, 1] = True
    assert Target("region", (1, 2), masks).describe().endswith("(class 1: 9 voxels, class 2: 3 voxels)")
    named = Target("region", (1, 2), masks).named(("bg", "edema", "core"), (0, 2, 4))
    assert named.subset(1).shown_names == ("core (label 4)",)
    assert skipped_line(("necrosis", "enhancing")) == "no necrosis or enhancing predicted: skipped"


def test_explain_case_skips_a_class_that_is_not_predicted(case, edema_only):
    result = explain_case(case, edema_only, method="saliency", device="cpu")
    assert result.class_names == ("edema",) and result.skipped == ("core",)
    assert result.relevance.shape[0] == 1
    # Numbers that match: the target's count is the segmentation's count of label 2, by name and label value.
    from napari_segxai.core.model.inference import segment

    voxels = int((segment(case, edema_only, device="cpu").labels == 2).sum())
    assert f"edema (label 2): {voxels} voxels" in result.target_description


def test_explained_voxels_match_the_segmentation_outside_the_head_too(case, edema_only):
    import dataclasses

    from napari_segxai.core.model.inference import segment

    channels = np.array(case.channels)
    channels[:, :, :, :3] = 0.0  # three slices with no signal in any sequence: outside the head
    headless = dataclasses.replace(case, channels=channels)
    seg = segment(headless, edema_only, device="cpu")
    voxels = int((seg.labels == 2).sum())
    assert seg.outside_removed == 16 * 16 * 3 and voxels == 16 * 16 * 9
    result = explain_case(headless, edema_only, method="saliency", device="cpu")
    assert result.target_description.endswith(f"(edema (label 2): {voxels} voxels)")


def test_explain_case_with_no_class_predicted_says_so_by_name(case, no_tumour):
    with pytest.raises(ValueError, match="Nothing to explain: no edema or core is predicted in this case"):
        explain_case(case, no_tumour, method="saliency", device="cpu")


def test_trust_problem_skips_a_class_that_is_not_predicted(case, edema_only):
    from napari_segxai.core.trust.problem import case_problem

    problem = case_problem(case, edema_only, device="cpu")
    assert problem.class_names == ("edema",) and problem.target.skipped == ("core",)
    assert problem.target.masks.shape[0] == 1


# ---------------------------------------------------------------- the command line


@pytest.fixture
def case_dir(tiny_case_dir):
    return tiny_case_dir(modalities=("t1", "flair"), shape=(16, 16, 12), name="Case001")


def test_segxai_explain_prints_the_skipped_class(tmp_path, case_dir, capsys):
    from napari_segxai.cli import main

    card = write_silent_card(tmp_path / "model", silent=("background", "core"))
    out = tmp_path / "out"
    assert main(["explain", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Case001: no core predicted: skipped." in printed
    assert "Explained edema of Case001" in printed and "edema (label 2): " in printed
    import json

    assert json.loads((out / "Case001_saliency.json").read_text())["skipped_not_predicted"] == ["core"]


def test_segxai_explain_on_a_case_without_any_finding_is_one_sentence(tmp_path, case_dir, capsys):
    from napari_segxai.cli import main

    card = write_silent_card(tmp_path / "model", silent=("edema", "core"))
    assert main(["explain", str(case_dir), "--model", str(card), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert "Nothing to explain: no edema or core is predicted in this case" in err and "Traceback" not in err


def test_segxai_trust_prints_the_skipped_class(tmp_path, case_dir, capsys):
    from napari_segxai.cli import main

    card = write_silent_card(tmp_path / "model", silent=("background", "core"))
    code = main(["trust", str(case_dir), "--model", str(card), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--methods", "saliency", "--max-steps", "1", "--modes", "cascading", "--subsets", "2",
                 "--deletion-steps", "2", "--noise-samples", "1", "--margin", "2"])
    assert code == 0, capsys.readouterr().err
    assert "Case001: no core predicted: skipped." in capsys.readouterr().out


def test_segxai_influence_names_a_class_not_predicted(tmp_path, capsys, monkeypatch):
    from _influence import blob_case, toy_model
    from napari_segxai.cli import main
    from napari_segxai.core.io.nifti import save_nifti

    monkeypatch.setenv("SEGXAI_TRAINING_CASES", str(tmp_path / "cases"))
    card = toy_model(tmp_path / "toy")
    case = blob_case()
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, tmp_path / "case" / f"blobs_{modality}.nii.gz")
    assert main(["influence", str(tmp_path / "case"), "--model", str(card), "--out", str(tmp_path / "out"),
                 "--threshold", "0.999999", "--class", "edema"]) == 0
    assert "case: no edema predicted (at probability >= 0.999999): skipped." in capsys.readouterr().out


# ---------------------------------------------------------------- the report


def test_report_on_a_case_with_no_tumour_says_so_first(tmp_path, case_dir, capsys):
    from napari_segxai.cli import main

    card = write_silent_card(tmp_path / "model", silent=("edema", "core"))
    out = tmp_path / "out"
    assert main(["report", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu"]) == 0, \
        capsys.readouterr().err
    assert "Case001: No tumour predicted: tiny-unet labelled no voxel of this case as edema, core" \
        in capsys.readouterr().out
    page = (out / "report.html").read_text()
    first = page.index("<h2>")
    assert page[first:].startswith("<h2>Finding</h2><p>No tumour predicted:")
    assert "<h2>Relevance</h2>" not in page and "No tumour predicted, so there is no training evidence" in page
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.png"]


def test_report_says_which_class_is_not_predicted_and_counts_by_name_and_label(tmp_path, case_dir, capsys):
    from napari_segxai.cli import main

    card = write_silent_card(tmp_path / "model", silent=("background", "core"))
    out = tmp_path / "out"
    assert main(["report", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu",
                 "--no-influence"]) == 0, capsys.readouterr().err
    assert "Case001: No core predicted." in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "<h2>Finding</h2><p>No core predicted.</p>" in page and "<h2>Relevance</h2>" in page
    voxels = 16 * 16 * 12  # edema everywhere: the class table and the target description give the same count
    assert f"<td>edema</td><td>2</td><td>{voxels}</td>" in page and f"edema (label 2): {voxels} voxels" in page
    with open(out / "roi.csv") as handle:
        assert "edema" in handle.read()
