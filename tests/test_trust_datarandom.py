"""Data randomisation: twins trained on true and permuted labels of generated cases, maps compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _cards import write_card
from _trust import SobelOfInput
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.trust import case_problem
from napari_segxai.core.trust.datarandom import (
    data_randomisation_test, label_permutation, train_twin, training_volumes,
)
from napari_segxai.core.training.synth import generate_case


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    return load_model_card(write_card(folder, modalities=["flair", "t1ce"],
                                      classes=[{"name": "background", "label": 0, "color": "#000000"},
                                               {"name": "edema", "label": 2, "color": "#3cb44b"},
                                               {"name": "enhancing", "label": 4, "color": "#ffe119"}],
                                      preprocessing={"spacing": None}, inference={"roi_size": [16, 16, 16]}))


def test_no_case_keeps_its_own_labels():
    for n in (2, 3, 7):
        order = label_permutation(n)
        assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))


def test_twins_are_seeded_and_the_permutation_changes_what_is_learned(card):
    images, targets = training_volumes(card, [1000, 1001, 1002], size="toy")
    assert images[0].shape == (2, 32, 32, 32) and targets[0].shape == (32, 32, 32)
    assert set(np.unique(targets[0].numpy())) <= {0, 1, 2}
    true_a, loss = train_twin(card, images, targets, permute=False, steps=3, crop=16, seed=1)
    true_b, _ = train_twin(card, images, targets, permute=False, steps=3, crop=16, seed=1)
    permuted, _ = train_twin(card, images, targets, permute=True, steps=3, crop=16, seed=1)
    assert np.isfinite(loss) and not true_a.training
    for (name, a), b, c in zip(true_a.state_dict().items(), true_b.state_dict().values(), permuted.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(true_a.state_dict().values(), permuted.state_dict().values()))


def test_data_randomisation_flags_a_weight_blind_method(card):
    case = generate_case(1010, size="toy").case
    problem = case_problem(case, card, classes=["edema", "enhancing"], margin=4, device="cpu")
    result = data_randomisation_test(problem, ["saliency", SobelOfInput()], card, cases=2, size="toy",
                                     steps=4, crop=16, seed=0)
    assert set(result.final_loss) == {"true labels", "permuted labels"}
    rows = {(r.method, r.class_name, r.first, r.second): r for r in result.rows}
    assert len(rows) == 2 * 2 * 3
    for key, row in rows.items():
        if key[0] == "sobel_of_input":
            assert row.spearman == pytest.approx(1.0) and row.ssim == pytest.approx(1.0)
    assert rows[("saliency", "edema", "model", "permuted labels")].spearman < 0.9


def test_cli_data_check(tmp_path, card, tiny_case_dir, capsys):
    from napari_segxai.cli import main

    folder = tiny_case_dir(modalities=("t1ce", "flair"), shape=(16, 16, 16), name="Case001")
    code = main(["trust", str(folder), "--model", str(card.path), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--methods", "saliency", "--checks", "data", "--data-steps", "2", "--data-cases", "2",
                 "--classes", "edema", "--margin", "2"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "data_randomisation.csv").read_text().startswith("method,class_name,first,second")
    assert main(["trust", str(folder), "--model", str(card.path), "--out", str(tmp_path / "o2"),
                 "--checks", "data", "--data-cases", "1"]) == 2


def test_twins_train_with_the_recipe_of_the_cards_training_manifest(tmp_path, card):
    import dataclasses
    import json

    from napari_segxai.core.model.architectures import create_network
    from napari_segxai.core.model.card import default_model_card
    from napari_segxai.core.training.config import DEFAULT_CONFIG
    from napari_segxai.core.trust.datarandom import twin_recipe

    demo = default_model_card()
    manifest = json.loads(demo.training.read_text())
    recipe = twin_recipe(demo)   # the bundled model: what it was trained with
    assert recipe["optimizer"] == manifest["optimizer"] and recipe["loss"] == manifest["loss"]
    assert recipe["augmentation"] == manifest["augmentation"]
    assert twin_recipe(card)["optimizer"] == DEFAULT_CONFIG["optimizer"]   # no manifest: the demo trainer's defaults

    # A manifest whose optimiser cannot move the weights: the twin stays at its seeded initialisation.
    still = tmp_path / "manifest.json"
    still.write_text(json.dumps({"optimizer": {"name": "SGD", "lr": 0.0}, "schedule": {"name": "constant"}}))
    frozen = dataclasses.replace(card, training=still)
    images, targets = training_volumes(frozen, [1000, 1001], size="toy")
    twin, loss = train_twin(frozen, images, targets, permute=True, steps=2, crop=16, seed=3)
    torch.manual_seed(3)
    initial = create_network(card.architecture, card.kwargs)
    assert np.isfinite(loss)
    for (name, a), b in zip(twin.state_dict().items(), initial.state_dict().values()):
        if "running" not in name and "num_batches" not in name:   # batch-norm statistics do move
            assert torch.equal(a, b), name
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        twin_recipe(dataclasses.replace(card, training=broken))
