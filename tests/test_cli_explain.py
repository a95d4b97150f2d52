"""``segxai explain``: end to end on a tiny case folder with a tiny card, targets, parameters, user errors, --help."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from _cards import lps_affine, write_card
from napari_segxai.cli import main
from napari_segxai.core.attribution import available_methods, explain_case
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.loading import load_model_card

AFFINE = lps_affine((1.0, 1.0, 2.0))


@pytest.fixture
def case_dir(tiny_case_dir):
    return tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), name="Case001")


@pytest.fixture
def card(tmp_path):
    return write_card(tmp_path / "model")


def _explain(case_dir, card, out, *extra):
    return main(["explain", str(case_dir), "--model", str(card), "--out", str(out), "--device", "cpu", *extra])


def test_explain_writes_one_4d_nifti_per_class_with_the_case_affine(tmp_path, case_dir, card, capsys):
    out = tmp_path / "out"
    inputs = {p: p.read_bytes() for p in case_dir.iterdir()}
    assert _explain(case_dir, card, out, "--classes", "edema,core") == 0

    record = json.loads((out / "Case001_saliency.json").read_text())
    assert record["method"] == "saliency" and record["classes"] == ["edema", "core"]
    assert record["channels"] == ["flair", "t1"] and record["class_labels"] == [2, 4]
    assert record["target"]["kind"] == "predicted" and record["target"]["threshold"] is None
    assert record["seconds"] > 0 and record["signed"] is True
    expected = explain_case(load_case(case_dir), load_model_card(card), method="saliency",
                            classes=["edema", "core"], device="cpu")
    for k, name in enumerate(["edema", "core"]):
        image = nib.load(out / f"Case001_saliency_{name}.nii.gz")
        assert record["files"][name] == str(out / f"Case001_saliency_{name}.nii.gz")
        np.testing.assert_allclose(image.affine, AFFINE)
        data = image.get_fdata()
        assert data.shape == (16, 16, 12, 2)
        assert np.isfinite(data).all() and np.abs(data).max() > 0
        np.testing.assert_allclose(data, np.moveaxis(expected.relevance[k], 0, -1), rtol=1e-4, atol=1e-7)
    target = nib.load(out / "Case001_saliency_target.nii.gz")
    np.testing.assert_allclose(target.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(target.dataobj), np.moveaxis(expected.target.masks, 0, -1))
    assert sorted(p.name for p in out.iterdir()) == [
        "Case001_saliency.json", "Case001_saliency_core.nii.gz", "Case001_saliency_edema.nii.gz",
        "Case001_saliency_target.nii.gz",
    ]
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():  # written with the usual permissions (not mkstemp's owner-only)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    printed = capsys.readouterr().out
    assert str(out / "Case001_saliency_edema.nii.gz") in printed
    # the cost is said before the work and kept in the record
    assert printed.index("Estimated cost: saliency") < printed.index("Explained ")
    assert record["cost_estimate"]["forward_passes"] >= 1 and record["cost_estimate"]["seconds"] >= 0
    assert {p: p.read_bytes() for p in case_dir.iterdir()} == inputs  # inputs untouched


def test_voxel_target_and_typed_parameters(tmp_path, case_dir, card):
    out = tmp_path / "out"
    code = _explain(case_dir, card, out, "--method", "integrated_gradients", "--classes", "core",
                    "--target", "voxel", "8,8,6", "--param", "steps=4", "--param", "baseline=minimum")
    assert code == 0
    record = json.loads((out / "Case001_integrated_gradients.json").read_text())
    assert record["parameters"]["steps"] == 4 and record["parameters"]["baseline"] == "minimum"
    assert record["target"]["kind"] == "voxel" and record["target"]["voxel"] == [8, 8, 6]
    mask = np.asarray(nib.load(out / "Case001_integrated_gradients_target.nii.gz").dataobj)
    assert mask.shape == (16, 16, 12, 1) and 1 <= mask.sum() <= 8  # the clicked voxel (2 mm model grid)
    assert mask[8, 8, 6, 0] == 1
    assert nib.load(out / "Case001_integrated_gradients_core.nii.gz").shape == (16, 16, 12, 2)


def test_region_target_and_confident_and_all_classes(tmp_path, case_dir, card, nifti_writer):
    region = np.zeros((16, 16, 12), np.uint8)
    region[4:10, 5:11, 3:8] = 1
    mask_path = nifti_writer(region, AFFINE, tmp_path / "mask.nii.gz")
    before = mask_path.read_bytes()
    assert _explain(case_dir, card, tmp_path / "a", "--target", "region", str(mask_path),
                    "--method", "gradient_x_input", "--classes", "all") == 0
    record = json.loads((tmp_path / "a" / "Case001_gradient_x_input.json").read_text())
    assert record["classes"] == ["background", "edema", "core"] and record["target"]["kind"] == "region"
    written = np.asarray(nib.load(tmp_path / "a" / "Case001_gradient_x_input_target.nii.gz").dataobj)
    assert written.shape == (16, 16, 12, 3) and (written == written[..., :1]).all()
    overlap = 2 * (written[..., 0] & region).sum() / (written[..., 0].sum() + region.sum())
    assert overlap > 0.8  # the painted region, through the model's 2 mm grid and back
    assert mask_path.read_bytes() == before
    assert _explain(case_dir, card, tmp_path / "b", "--confident", "0.2") == 0
    assert json.loads((tmp_path / "b" / "Case001_saliency.json").read_text())["target"]["threshold"] == 0.2


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "nonsense"], ["Unknown attribution method", "saliency"]),
        (["--param", "steps=4"], ["saliency has no parameter 'steps'"]),
        (["--method", "integrated_gradients", "--param", "steps=two"], ["steps must be a number"]),
        (["--method", "integrated_gradients", "--param", "steps=0"], ["steps must be at least"]),
        (["--method", "integrated_gradients", "--param", "baseline=grey"], ["baseline='grey'", "zeros"]),
        (["--param", "nokey"], ["KEY=VALUE"]),
        (["--classes", "tumour"], ["no class 'tumour'", "edema"]),
        (["--target", "voxel", "8,8"], ["give 3 coordinates"]),
        (["--target", "voxel", "99,8,6"], ["not a voxel of the case", "16 x 16 x 12"]),
        (["--target", "voxel", "8,8,6", "--confident", "0.5"], ["--confident applies only"]),
        (["--target", "region", "missing.nii.gz"], ["does not exist"]),
        (["--target", "brain"], ["Unknown target 'brain'"]),
        (["--confident", "1.5"], ["--confident must be"]),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, case_dir, card, capsys, extra, words):
    code = _explain(case_dir, card, tmp_path / "out", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("segxai explain: error:")
    for word in words:
        assert word in err
    assert not (tmp_path / "out").exists()


def test_region_mask_off_the_case_grid_is_refused(tmp_path, case_dir, card, nifti_writer, capsys):
    wrong_shape = nifti_writer(np.ones((8, 8, 8), np.uint8), AFFINE, tmp_path / "small.nii.gz")
    assert _explain(case_dir, card, tmp_path / "out", "--target", "region", str(wrong_shape)) == 2
    assert "has shape (8, 8, 8)" in capsys.readouterr().err
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    moved = nifti_writer(np.ones((16, 16, 12), np.uint8), shifted, tmp_path / "moved.nii.gz")
    assert _explain(case_dir, card, tmp_path / "out", "--target", "region", str(moved)) == 2
    assert "different affine" in capsys.readouterr().err


def test_never_writes_over_an_input(tmp_path, case_dir, card, nifti_writer, capsys):
    out = tmp_path / "out"
    region = np.zeros((16, 16, 12), np.uint8)
    region[6:10, 6:10, 4:8] = 1
    mask_path = nifti_writer(region, AFFINE, out / "Case001_saliency_target.nii.gz")
    before = mask_path.read_bytes()
    assert _explain(case_dir, card, out, "--target", "region", str(mask_path)) == 2
    assert "Refusing to overwrite" in capsys.readouterr().err
    assert mask_path.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [mask_path.name]


def test_help_documents_every_option_and_lists_the_methods(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("case", "--model", "--out", "--device", "--method", "--classes", "--target", "--confident",
                   "--param", "--output", "--trust-model", "channels", "affine", ".json"):
        assert option in text
    for name in available_methods():
        assert f"  {name} " in text
