"""``segxai segment``: end to end on a tiny case folder, user errors, --trust-model, --help."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from _cards import lps_affine, write_card
from napari_segxai.cli import main
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.loading import load_model_card

AFFINE = lps_affine((1.0, 1.0, 2.0))


@pytest.fixture
def case_dir(tiny_case_dir):
    return tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), name="Case001")


def test_segment_writes_labels_and_probabilities_with_the_case_affine(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model")
    out = tmp_path / "out"
    inputs = {p: p.read_bytes() for p in case_dir.iterdir()}
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu"]) == 0

    labels_img = nib.load(out / "Case001_seg.nii.gz")
    prob_img = nib.load(out / "Case001_prob.nii.gz")
    np.testing.assert_allclose(labels_img.affine, AFFINE)
    np.testing.assert_allclose(prob_img.affine, AFFINE)
    labels = np.asarray(labels_img.dataobj)
    prob = prob_img.get_fdata()
    assert labels.shape == (16, 16, 12) and prob.shape == (16, 16, 12, 3)
    assert set(np.unique(labels)) <= {0, 2, 4}
    np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(labels, np.array([0, 2, 4])[prob.argmax(-1)])
    printed = capsys.readouterr().out
    assert str(out / "Case001_seg.nii.gz") in printed and str(out / "Case001_prob.nii.gz") in printed
    assert {p: p.read_bytes() for p in case_dir.iterdir()} == inputs  # inputs untouched
    assert sorted(p.name for p in out.iterdir()) == ["Case001_prob.nii.gz", "Case001_seg.nii.gz"]


def test_missing_modality_exits_2_with_one_line(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model", modalities=["t2", "t1"])
    code = main(["segment", str(case_dir), "--model", str(card), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("segxai segment: error:") and "no t2 channel" in err and "t1, flair" in err
    assert not any((tmp_path / "out").glob("*"))   # nothing written before the refusal


def test_refuses_to_overwrite_the_cases_own_label_file(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model")
    label = case_dir / "Case001_seg.nii.gz"
    before = label.read_bytes()
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(case_dir)]) == 2
    assert "the case's own folder" in capsys.readouterr().err
    assert label.read_bytes() == before


def test_refuses_to_write_into_the_folder_of_a_case_without_label(tmp_path, tiny_case_dir, capsys, monkeypatch):
    case_dir = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), label=False)
    card = write_card(tmp_path / "model")
    before = sorted(p.name for p in case_dir.iterdir())
    monkeypatch.chdir(case_dir)  # also when --out names the folder another way
    assert main(["segment", str(case_dir), "--model", str(card), "--out", ".", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the case's own folder" in err and "Case001_seg.nii.gz" in err
    assert sorted(p.name for p in case_dir.iterdir()) == before


def test_bad_card_exits_2_naming_the_field(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model", activation="relu")
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(tmp_path / "o")]) == 2
    assert "'activation'" in capsys.readouterr().err


def test_trust_model_flag_allows_a_pickled_network(tmp_path, case_dir, capsys):
    folder = tmp_path / "model"
    write_card(folder)
    torch.save(build_network(load_model_card(folder / "card.yaml")), folder / "whole.pt")
    card = write_card(folder, weights="whole.pt", filename="pickled.yaml")
    args = ["segment", str(case_dir), "--model", str(card), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 2
    assert "--trust-model" in capsys.readouterr().err
    assert main(args + ["--trust-model"]) == 0
    assert (tmp_path / "out" / "Case001_seg.nii.gz").is_file()


def test_trust_model_flag_gates_a_torchscript_archive(tmp_path, case_dir, capsys):
    folder = tmp_path / "model"
    write_card(folder)
    network = build_network(load_model_card(folder / "card.yaml"))
    torch.jit.save(torch.jit.script(network), str(folder / "model.ts"))
    card = write_card(folder, save_weights=False, architecture="torchscript", kwargs={}, weights="model.ts",
                      filename="scripted.yaml")
    args = ["segment", str(case_dir), "--model", str(card), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "TorchScript program" in err and "--trust-model" in err and "Traceback" not in err
    assert not any((tmp_path / "out").glob("*"))   # nothing written before the refusal
    assert main(args + ["--trust-model"]) == 0
    assert (tmp_path / "out" / "Case001_seg.nii.gz").is_file()


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("case", "--model", "--out", "--device", "--trust-model", "_seg.nii.gz", "_prob.nii.gz"):
        assert option in text


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lesion-free template", "MS patient"])
def test_no_tumour_cases_are_flagged_and_get_no_labels_outside_the_head(tmp_path, which, request, capsys):
    """The bundled tumour model on a case with no tumour: out of distribution, said first, nothing outside the head."""
    from napari_segxai.core.io.nifti import load_case, save_nifti
    from napari_segxai.core.training.synth import lesion_free_case

    if which == "MS patient":
        folder = request.getfixturevalue("realdata") / "open_ms_patient19"   # skips without ../shared/realdata
    else:
        case = lesion_free_case()
        folder = tmp_path / case.name
        folder.mkdir()
        for modality, channel in zip(case.modalities, case.channels):
            save_nifti(channel, case.affine, folder / f"{case.name}_{modality}.nii.gz")
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    domain = next(line for line in printed.splitlines() if line.startswith("Domain: "))
    # the template: no lesion, which no training case lacked; the MS case: plaques it is unsure of
    reason = {"lesion-free template": "the model was never trained on a case without one",
              "MS patient": "may be of a kind it was not trained on"}[which]
    assert "out of distribution" in domain and reason in domain, domain
    case = load_case(folder)
    labels = np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    silent = np.all([(c == 0) | (c == c.min()) for c in case.channels], axis=0)
    assert labels.shape == silent.shape and not labels[silent].any()   # nothing labelled where no sequence has signal
    assert "labelled voxels outside the head" in printed
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == before   # the case's files untouched
