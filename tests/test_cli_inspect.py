"""``segxai inspect``: end to end on a tiny case with a tiny card, and the sentences for a user's mistakes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from _cards import lps_affine, write_card
from napari_segxai.cli import main

AFFINE = lps_affine(spacing=(2.0, 2.0, 2.0))


@pytest.fixture
def case_and_card(tiny_case_dir, tmp_path):
    folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), name="Case001")
    return folder, write_card(tmp_path / "card")


def test_inspect_writes_feature_maps_filters_a_maximised_input_and_a_surrogate(case_and_card, tmp_path, capsys):
    case, card = case_and_card
    out = tmp_path / "out"
    code = main(["inspect", str(case), "--model", str(card), "--out", str(out), "--layers", "model.0.conv",
                 "--keep", "2", "--maximise", "edema", "--steps", "3", "--surrogate", "--concepts", "edema",
                 "--device", "cpu"])
    assert code == 0
    record = json.loads((out / "Case001_inspect.json").read_text())
    assert [layer["name"] for layer in record["layers"]][:2] == ["model", "model.0"]
    assert record["layers"][0]["output_shape"] == [3, 16, 16, 16]
    features = record["feature_maps"][0]
    assert features["layer"] == "model.0.conv" and features["channels"] == 4 and len(features["kept"]) == 2
    assert len(features["ranking"]) == 4 and len(features["patches"]) == 2
    concepts = features["concept_relevance"]["edema"]
    assert sorted(row["channel"] for row in concepts) == [0, 1, 2, 3]
    assert abs(sum(row["share"] for row in concepts) - 1) < 1e-3
    image = nib.load(features["file"])
    assert image.shape == (16, 16, 12, 2)
    np.testing.assert_allclose(image.affine, AFFINE)
    maximised = record["maximised"][0]
    assert maximised["objective"].startswith("class edema") and maximised["steps"] == 3
    assert nib.load(maximised["file"]).shape == (16, 16, 12, 2)
    surrogate = record["surrogate"]
    assert 0 <= surrogate["agreement"] <= 1 and isinstance(surrogate["low_fidelity"], bool)
    assert "class:" in (out / "Case001_surrogate_tree_rules.txt").read_text()
    np.testing.assert_allclose(nib.load(surrogate["file"]).affine, AFFINE)
    assert sorted(record["filters"]["files"]) == ["flair", "t1"]
    printed = capsys.readouterr().out
    assert "model.0.conv (Conv3d): 4 channels, 2 kept" in printed and "Surrogate: tree surrogate" in printed


def test_inspect_lists_layers_and_refuses_a_wrong_layer_name_in_a_sentence(case_and_card, tmp_path, capsys):
    case, card = case_and_card
    assert main(["inspect", str(case), "--model", str(card), "--out", str(tmp_path / "o"), "--list-layers",
                 "--device", "cpu"]) == 0
    assert "model.1.submodule.conv (Conv3d): 8 x 8 x 8 x 8" in capsys.readouterr().out
    code = main(["inspect", str(case), "--model", str(card), "--out", str(tmp_path / "o"), "--layers", "model.0.cnov",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no layer called 'model.0.cnov'. Did you mean model.0.conv" in err
    code = main(["inspect", str(case), "--model", str(card), "--out", str(tmp_path / "o"), "--maximise", "tumour",
                 "--device", "cpu"])
    assert code == 2 and "no class 'tumour'; choose one of background, edema, core" in capsys.readouterr().err
