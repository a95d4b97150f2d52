"""``segxai segment --uncertainty`` and ``segxai explain --target uncertain``: files, affine, one-line mistakes."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from _cards import lps_affine, write_card
from napari_segxai.cli import main
from napari_segxai.cli._explain_options import DEFAULT_SAMPLES, DEFAULT_THRESHOLD, UNCERTAINTY_MODES
from napari_segxai.core.model import uncertainty as core

AFFINE = lps_affine((1.0, 1.0, 2.0))


@pytest.fixture
def case_dir(tiny_case_dir):
    return tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), name="Case001")


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.rpartition("\r")[2].strip()  # after the progress bar, when work had started
    assert err.count("\n") == 0 and err.startswith(f"segxai {command}: error:"), err
    return err


def test_the_command_line_knows_the_core_modes_and_defaults():
    assert UNCERTAINTY_MODES == core.MODES
    assert DEFAULT_SAMPLES == core.DEFAULT_SAMPLES and DEFAULT_THRESHOLD == core.DEFAULT_THRESHOLD


def test_segment_writes_entropy_and_mutual_information_on_the_case_affine(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu",
                 "--uncertainty", "flips"]) == 0
    printed = capsys.readouterr().out
    files = {name: out / f"Case001_{name}.nii.gz" for name in ("seg", "prob", "entropy", "mutual_information")}
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in files.values())
    entropy_img, mutual_img = nib.load(files["entropy"]), nib.load(files["mutual_information"])
    np.testing.assert_allclose(entropy_img.affine, AFFINE)
    np.testing.assert_allclose(mutual_img.affine, AFFINE)
    entropy, mutual = entropy_img.get_fdata(), mutual_img.get_fdata()
    assert entropy.shape == mutual.shape == (16, 16, 12)
    assert 0 < entropy.max() <= math.log(3) + 1e-5 and mutual.min() >= 0 and np.all(mutual <= entropy + 1e-5)
    assert str(files["entropy"]) in printed and str(files["mutual_information"]) in printed
    assert "flips ensemble of 8 runs" in printed


def test_segment_refuses_an_ensemble_the_model_cannot_make_in_one_line(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(out), "--uncertainty", "dropout"]) == 2
    assert "no dropout layer" in _one_line_error(capsys, "segment")
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(out), "--uncertainty", "checkpoints"]) == 2
    assert "no recorded training checkpoints" in _one_line_error(capsys, "segment")
    assert main(["segment", str(case_dir), "--model", str(card), "--out", str(out), "--uncertainty", "dropout",
                 "--dropout-samples", "1"]) == 2
    assert "2 or more" in _one_line_error(capsys, "segment")
    assert not out.exists() or not any(out.glob("*_entropy.nii.gz"))


def test_explain_the_uncertain_voxels(tmp_path, case_dir, capsys):
    import json

    card = write_card(tmp_path / "model")
    out = tmp_path / "out"
    assert main(["explain", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu",
                 "--target", "uncertain", "0.0", "--classes", "edema"]) == 0
    printed = capsys.readouterr().out
    assert "Uncertain voxels:" in printed and "flips ensemble" in printed
    target = nib.load(out / "Case001_saliency_target.nii.gz").get_fdata()
    entropy = core.uncertainty(_case(case_dir, card), _card(card), "flips", device="cpu").entropy
    np.testing.assert_array_equal(target[..., 0] > 0, entropy > 0.0)
    assert json.loads((out / "Case001_saliency.json").read_text())["classes"]


def test_explain_uncertain_mistakes_are_one_sentence(tmp_path, case_dir, capsys):
    card = write_card(tmp_path / "model")
    out = tmp_path / "out"
    base = ["explain", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu"]
    assert main(base + ["--target", "uncertain", "much"]) == 2
    assert "entropy threshold in nats" in _one_line_error(capsys, "explain")
    assert main(base + ["--target", "uncertain", "0.2", "0.3"]) == 2
    assert "at most one entropy threshold" in _one_line_error(capsys, "explain")
    assert main(base + ["--target", "uncertain", "5"]) == 2
    assert "not below 1.099 nats" in _one_line_error(capsys, "explain")
    assert main(base + ["--target", "uncertain", "--confident", "0.5"]) == 2
    assert "--confident applies only" in _one_line_error(capsys, "explain")
    assert main(base + ["--target", "uncertain", "--uncertainty", "dropout"]) == 2
    assert "no dropout layer" in _one_line_error(capsys, "explain")


def test_no_uncertain_voxel_is_said_in_one_line(tmp_path, case_dir, capsys, monkeypatch):
    card = write_card(tmp_path / "model")
    real = core.uncertainty

    def certain(*args, **kwargs):  # a model sure of every voxel
        measured = real(*args, **kwargs)
        return core.Uncertainty(np.zeros_like(measured.entropy), np.zeros_like(measured.entropy), measured.mode,
                                measured.members, measured.affine, measured.max_entropy, measured.device, 0.0)

    monkeypatch.setattr(core, "uncertainty", certain)
    assert main(["explain", str(case_dir), "--model", str(card), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--target", "uncertain"]) == 2
    assert "No voxel has an entropy above 0.5 nats" in _one_line_error(capsys, "explain")


def _card(path):
    from napari_segxai.core.model.loading import load_model_card

    return load_model_card(path)


def _case(folder, card_path):
    from napari_segxai.core.io.nifti import load_case

    return load_case(folder, prefer=_card(card_path).modalities)
