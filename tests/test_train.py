"""Training on toy generated cases: checkpoints, learning rates, manifest, card; cancel; ``segxai train`` and ``segxai evaluate``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_segxai.cli import main
from napari_segxai.core.model.architectures import create_network
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.progress import Cancelled
from napari_segxai.core.model.inference import segment
from napari_segxai.core.training.synth import DEMO_SEED, generate_case
from napari_segxai.core.io.manifest import MANIFEST_FORMAT, read_manifest
from napari_segxai.core.training.evaluate import (
    evaluate_generated, false_positive_share, largest_component, region_dice, summarize,
)
from napari_segxai.core.training.schedule import learning_rate
from napari_segxai.core.training.config import load_config, make_config, training_seeds
from napari_segxai.core.training.loop import train
from napari_segxai.core.model.weights import load_state_dict

TINY = {
    "name": "tiny-trained",
    "description": "a tiny UNet trained for a few steps on toy cases",
    "kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
    "data": {"size": "toy", "seed_start": 50, "initial_cases": 2, "cases": 4, "grow_every": 3},
    "crop": {"size": [16, 16, 16], "per_step": 1, "tumour_fraction": 0.7},
    "schedule": {"name": "cosine", "horizon": "steps", "steps": 10, "warmup_steps": 2, "min_lr": 1e-4},
    "optimizer": {"name": "Adam", "lr": 0.01},
    "checkpoints": 5,
    "time_budget_minutes": 5,
    "threads": 1,
    "inference": {"roi_size": [16, 16, 16], "overlap": 0.25, "sw_batch_size": 1, "mode": "gaussian"},
    "preprocessing": {"orientation": "RAS", "spacing": None, "spacing_policy": "resample", "normalization": "zscore_nonzero"},
}

TINY_2D = {
    **TINY,
    "name": "tiny-trained-2d",
    "spatial_dims": 2,
    "slice_axis": 2,
    "crop": {"size": [16, 16], "per_step": 4, "tumour_fraction": 0.7},
    "schedule": {"name": "cosine", "horizon": "steps", "steps": 6, "warmup_steps": 0, "min_lr": 1e-4},
    "inference": {"roi_size": [32, 32], "overlap": 0.25, "sw_batch_size": 4, "mode": "gaussian"},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "tiny"
    lines: list[str] = []
    reports: list[tuple[int, int]] = []
    result = train(TINY, out, log=lines.append, progress=lambda d, t: reports.append((d, t)))
    return result, out, lines, reports


def test_training_writes_card_weights_checkpoints_and_manifest(trained):
    result, out, lines, reports = trained
    assert result.steps == 10 and result.stopped == "completed" and np.isfinite(result.final_loss)
    assert result.card == out / "card.yaml" and result.manifest == out / "training" / "manifest.json"
    assert (out / "weights.safetensors").is_file() and (out / "training" / "config.yaml").is_file()
    assert reports[-1] == (10, 10) and any("step 10" in line for line in lines)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["format"] == MANIFEST_FORMAT
    assert manifest["steps"] == 10 and len(manifest["lr_history"]) == 10 and len(manifest["loss_history"]) == 10
    assert manifest["optimizer"]["name"] == "Adam" and manifest["optimizer"]["lr"] == 0.01
    assert manifest["loss"]["name"] == "DiceCELoss"
    assert manifest["kwargs"] == {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "channels": [4, 8], "strides": [2], "num_res_units": 0}
    assert manifest["parameters"] == sum(p.numel() for p in create_network("UNet", manifest["kwargs"]).parameters())
    # The config as used reloads into the same settings.
    assert load_config(out / "training" / "config.yaml") == make_config(TINY)


def test_checkpoints_are_spread_over_training_and_carry_the_learning_rate(trained):
    _, out, _, _ = trained
    manifest = read_manifest(out)
    checkpoints = manifest["checkpoints"]
    assert len(checkpoints) == 5
    steps = [c["step"] for c in checkpoints]
    assert steps == sorted(steps) and len(set(steps)) == 5 and steps[-1] == 10 and steps[0] <= 4
    config = make_config(TINY)
    history = manifest["lr_history"]
    for c in checkpoints:
        assert c["lr"] == pytest.approx(history[c["step"] - 1], rel=1e-5)  # the lr of the last update before it
        assert np.isfinite(c["loss"]) and c["cases_in_pool"] >= 2
    # Warm-up, then a cosine from 0.01 down towards min_lr over the planned steps.
    planned = manifest["schedule"]["planned_steps"]
    expected = [learning_rate(i, (i - 2) / (planned - 2), config) for i in range(10)]
    assert history == pytest.approx(expected, rel=1e-5)
    assert history[0] < history[2] and history[2] == pytest.approx(0.01) and history[-1] < 0.001
    assert checkpoints[-1]["path"] == str((out / "weights.safetensors").resolve())


def _closest_gap(steps: list[int], start: int) -> int:
    """The fewest updates between the start of the schedule and a checkpoint or between two checkpoints."""
    return int(np.diff([start, *steps]).min())


def test_slow_early_updates_do_not_bunch_the_checkpoints_of_a_time_budgeted_run(tmp_path):
    """A shared CPU: the first updates are slow; the checkpoints still spread over the run's updates."""
    import time

    calls = []

    def busy_cpu_at_first(done, total):
        calls.append(done)
        if len(calls) <= 6:
            time.sleep(0.5)  # the first six updates take 3 s of the 9 s budget

    config = {**TINY, "schedule": {**TINY["schedule"], "horizon": "time", "steps": 40}, "time_budget_minutes": 0.15}
    result = train(config, tmp_path / "busy", progress=busy_cpu_at_first)
    steps = [c["step"] for c in read_manifest(result.manifest)["checkpoints"]]
    warmup = TINY["schedule"]["warmup_steps"]
    assert len(steps) >= 4 and steps[-1] == result.steps
    assert _closest_gap(steps, warmup) >= 0.1 * (result.steps - warmup), steps


def test_checkpoint_placement_follows_updates_and_keeps_its_spacing_when_the_plan_shrinks():
    from napari_segxai.core.training.schedule import next_checkpoint_step

    def placed(plan_at) -> list[int]:
        saved, last, steps = 0, 0, []
        for done in range(1, 10_000):
            plan = plan_at(done)
            if done >= plan:
                return steps + [done]
            if saved < 4 and done >= next_checkpoint_step(saved, last, plan, 5, 20):
                saved, last = saved + 1, done
                steps.append(done)
        raise AssertionError("the plan never ended")

    assert placed(lambda done: 1020) == [220, 420, 620, 820, 1020]
    # The expected updates fall from 3000 to 700 at update 650 (the CPU got busy): no bunching.
    steps = placed(lambda done: 3000 if done < 650 else 700)
    assert steps[0] == 616 and _closest_gap(steps, 20) >= (700 - 20) / 10, steps
    assert len(steps) < 5  # a checkpoint is left out rather than crammed in


def test_checkpoints_reload_into_the_network_and_differ(trained):
    _, out, _, _ = trained
    manifest = read_manifest(out / "training" / "manifest.json")
    states = []
    for c in manifest["checkpoints"]:
        state = load_state_dict(c["path"])
        network = create_network(manifest["architecture"], manifest["kwargs"])
        network.load_state_dict(state, strict=True)
        states.append(state)
    assert all(v.dtype == torch.float32 for v in states[0].values())
    key = next(k for k in states[0] if k.endswith("weight"))
    assert not torch.equal(states[0][key], states[-1][key])  # training moved the weights
    final = load_state_dict(out / "weights.safetensors")
    assert all(torch.equal(final[k], states[-1][k]) for k in final)


def test_training_set_is_recorded_and_regenerates(trained):
    _, out, _, _ = trained
    ts = read_manifest(out)["training_set"]
    assert ts["generator"] == "napari_segxai.core.training.synth.generate_case" and ts["size"] == "toy"
    assert ts["seeds"] == [50, 51, 52, 53] == training_seeds(make_config(TINY))
    assert ts["joined_at_step"] == [0, 0, 3, 6]  # two at the start, then one every grow_every updates
    assert generate_case(ts["seeds"][2], size="toy").case.label.any()


def test_card_loads_and_segments_a_toy_case(trained):
    result, out, _, _ = trained
    card = load_model_card(result.card)
    assert card.name == "tiny-trained" and card.architecture == "UNet" and card.spatial_dims == 3
    assert card.modalities == ("t1", "t1ce", "t2", "flair") and [c.label for c in card.classes] == [0, 1, 2, 4]
    assert card.weights == (out / "weights.safetensors").resolve() or card.weights == out / "weights.safetensors"
    assert card.training is not None and read_manifest(card.training)["name"] == "tiny-trained"
    case = generate_case(123, size="toy").case
    seg = segment(case, card, device="cpu")
    assert seg.labels.shape == case.shape and seg.probabilities.shape == (4,) + case.shape
    assert set(np.unique(seg.labels)) <= {0, 1, 2, 4}
    np.testing.assert_allclose(seg.probabilities.sum(0), 1.0, atol=1e-4)


def test_a_2d_slice_wise_model_trains_and_segments(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", _recording(torch.set_num_threads, seen := []))
    result = train(TINY_2D, tmp_path / "tiny2d")
    assert seen == [1, threads] and torch.get_num_threads() == threads  # the config's one thread, then the process's back
    manifest = read_manifest(result.manifest)
    assert manifest["spatial_dims"] == 2 and manifest["slice_axis"] == 2 and manifest["kwargs"]["spatial_dims"] == 2
    assert len(manifest["checkpoints"]) == 5
    card = load_model_card(result.card)
    assert card.spatial_dims == 2 and card.slice_axis == 2
    case = generate_case(124, size="toy").case
    seg = segment(case, card, device="cpu")
    assert seg.labels.shape == case.shape and set(np.unique(seg.labels)) <= {0, 1, 2, 4}


def _recording(function, calls: list):
    """``function`` that also appends its argument to ``calls``."""
    def record(value):
        calls.append(value)
        return function(value)
    return record


def test_cancel_keeps_the_checkpoints_so_far(tmp_path):
    asked = []

    def cancel_after_update_12() -> bool:
        asked.append(True)  # asked once per initial case (2), then once after every update
        return len(asked) >= 2 + 12

    out = tmp_path / "cancelled"
    config = {**TINY, "schedule": {**TINY["schedule"], "steps": 40}}
    threads = torch.get_num_threads()
    with pytest.raises(Cancelled):
        train(config, out, should_cancel=cancel_after_update_12)
    assert torch.get_num_threads() == threads  # given back when training stops early too
    manifest = read_manifest(out)
    assert manifest["stopped"] == "interrupted" and manifest["steps"] == 12
    assert len(manifest["checkpoints"]) >= 2 and manifest["checkpoints"][-1]["step"] == 12
    for c in manifest["checkpoints"]:
        load_state_dict(c["path"])
    assert load_model_card(out / "card.yaml").name == "tiny-trained"


def test_keyboard_interrupt_also_keeps_the_checkpoints(tmp_path):
    seen = []

    def interrupt_at_update_8(done, total):
        seen.append(done)
        if done == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, tmp_path / "interrupted", progress=interrupt_at_update_8)
    manifest = read_manifest(tmp_path / "interrupted")
    assert manifest["stopped"] == "interrupted" and manifest["steps"] == 8 and manifest["checkpoints"][-1]["step"] == 8


def test_default_inference_window_is_the_training_crop():
    config = make_config({"crop": {"size": [48, 40, 32]}})
    assert config["inference"]["roi_size"] == [48, 40, 32] and config["inference"]["overlap"] == 0.5
    assert make_config({"inference": {"roi_size": [24, 24, 24]}})["inference"]["roi_size"] == [24, 24, 24]


@pytest.mark.parametrize("offset, lowest, highest", [(0.25, 16, 48), (0.5, 1, 63)])
def test_crop_offset_places_the_drawn_tumour_voxel(offset, lowest, highest):
    """With offset 0.25 the drawn voxel stays in the crop's middle half; with 0.5 it can fall anywhere in the crop."""
    from napari_segxai.core.training.pool import PoolCase, random_crop

    target = np.zeros((256, 256, 256), np.uint8)
    target[128, 128, 128] = 1
    case = PoolCase(np.ones((1,) + target.shape, np.float16), target, np.array([[128, 128, 128]], np.int16),
                    np.array([[128, 128, 128]], np.int16))
    config = make_config({"crop": {"size": [64, 64, 64], "offset": offset}})
    rng = np.random.default_rng(0)
    where = np.array([np.argwhere(random_crop(case, config, rng, True)[1])[0] for _ in range(400)])
    assert where.min() >= lowest and where.max() <= highest
    assert where.min() <= lowest + 2 and where.max() >= highest - 2   # the whole range is reached
    with pytest.raises(ValueError, match="crop.offset must be a share of the crop size from 0 to 0.5"):
        make_config({"crop": {"offset": 0.75}})


def test_an_unenhanced_crop_takes_the_plain_channel_in_its_enhancing_class_and_relabels_it():
    """remove_enhancement: inside the enhancing class T1ce becomes T1 and the class becomes the non-enhancing core;
    far from it nothing changes, and the tumour core's extent is kept."""
    from napari_segxai.core.training.pool import remove_enhancement

    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 24, 24, 24)).astype(np.float32)
    target = np.zeros((24, 24, 24), np.uint8)
    target[8:16, 8:16, 8:16] = 3                                      # enhancing (class index 3)
    target[10:14, 10:14, 10:14] = 1                                   # necrosis inside it
    before = image.copy()
    out, relabelled = remove_enhancement(image, target, contrast=1, plain=0, enhancing=3, into=1)
    assert np.array_equal(image, before)                              # the crop it was given is untouched
    enhancing = target == 3
    assert np.allclose(out[1][enhancing], image[0][enhancing])
    assert np.array_equal(relabelled, np.where(enhancing, 1, target)) and relabelled.dtype == target.dtype
    assert np.array_equal(relabelled > 0, target > 0)
    far = np.ones(target.shape, bool)
    far[3:21, 3:21, 3:21] = False                                     # the blur reaches 4 voxels
    assert np.array_equal(out[1][far], image[1][far])                 # beyond the blended edge
    assert np.array_equal(np.delete(out, 1, axis=0), np.delete(image, 1, axis=0))


def test_unenhanced_setting_is_validated_and_reaches_the_crops(tmp_path):
    setting = {"probability": 1.0, "contrast": "t1ce", "plain": "t1", "enhancing": "enhancing", "into": "necrosis"}
    with pytest.raises(ValueError, match="augmentation.unenhanced.contrast 'post' is not one of the modalities"):
        make_config({"augmentation": {"unenhanced": {**setting, "contrast": "post"}}})
    with pytest.raises(ValueError, match="augmentation.unenhanced.into 'core' is not one of the classes"):
        make_config({"augmentation": {"unenhanced": {**setting, "into": "core"}}})
    with pytest.raises(ValueError, match="augmentation.unenhanced.probability must be a number from 0 to 1"):
        make_config({"augmentation": {"unenhanced": {**setting, "probability": 1.5}}})
    with pytest.raises(ValueError, match="must give probability, contrast, plain, enhancing, into"):
        make_config({"augmentation": {"unenhanced": {"probability": 0.3}}})
    from napari_segxai.core.training.config import unenhanced_indices

    assert unenhanced_indices(make_config({})) is None
    assert unenhanced_indices(make_config({"augmentation": {"unenhanced": setting}})) == {
        "contrast": 1, "plain": 0, "enhancing": 3, "into": 1}
    # with every enhancing crop unenhanced, training runs and records the setting; without it, the same seed
    # trains other weights (the crops differ)
    config = {**TINY, "schedule": {**TINY["schedule"], "steps": 3}, "checkpoints": 1,
              "crop": {**TINY["crop"], "tumour_fraction": 1.0}}
    on = train({**config, "augmentation": {"unenhanced": setting}}, tmp_path / "on")
    off = train(config, tmp_path / "off")
    assert yaml.safe_load((tmp_path / "on" / "training" / "config.yaml").read_text())["augmentation"]["unenhanced"] == setting
    assert not all(torch.equal(a, b) for a, b in zip(load_state_dict(on.card.parent / "weights.safetensors").values(),
                                                    load_state_dict(off.card.parent / "weights.safetensors").values()))


def test_config_mistakes_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown setting 'epochs'"):
        make_config({"epochs": 3})
    with pytest.raises(ValueError, match="unknown setting crop.shape"):
        make_config({"crop": {"shape": [8, 8, 8]}})
    with pytest.raises(ValueError, match="crop.size must give 2 sizes"):
        make_config({**TINY, "spatial_dims": 2, "slice_axis": 2})
    with pytest.raises(ValueError, match="demo case's seed"):
        make_config({"data": {"seed_start": DEMO_SEED - 1, "cases": 5, "initial_cases": 1}})
    with pytest.raises(ValueError, match="out_channels"):
        make_config({"kwargs": {"out_channels": 3}})
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        train(TINY, tmp_path / "taken")
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["keep.txt"]


def test_segxai_train_cli(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "checkpoints": 3}))
    out = tmp_path / "cli-model"
    assert main(["train", "--config", str(config), "--out", str(out), "--steps", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "card.yaml") in printed and "8 steps" in printed
    manifest = read_manifest(out)
    assert manifest["steps"] == 8 and [c["step"] for c in manifest["checkpoints"]] == [4, 6, 8]
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "y")]) == 2


def test_dice_regions_and_largest_component():
    reference = np.zeros((8, 8, 8), np.int16)
    reference[2:6, 2:6, 2:6] = 2
    reference[3:5, 3:5, 3:5] = 4
    assert region_dice(reference, reference) == {"whole_tumour": 1.0, "tumour_core": 1.0, "enhancing": 1.0}
    prediction = reference.copy()
    prediction[3:5, 3:5, 3:5] = 1  # core right, enhancing missed
    prediction[0, 0, 0] = 2        # a stray false positive
    d = region_dice(prediction, reference)
    assert d["tumour_core"] == 1.0 and d["enhancing"] == 0.0 and d["whole_tumour"] == pytest.approx(128 / 129)
    cleaned = largest_component(prediction)
    assert cleaned[0, 0, 0] == 0 and np.array_equal(cleaned[1:], prediction[1:])
    assert region_dice(cleaned, reference)["whole_tumour"] == 1.0
    assert false_positive_share(prediction, reference) == pytest.approx(1 / 65)  # the stray voxel of 65 predicted
    assert false_positive_share(cleaned, reference) == 0.0 and false_positive_share(reference * 0, reference) == 0.0
    touching = prediction.copy()
    touching[6, 2:6, 2:6] = 2  # a false rim joined to the tumour is not a separate false component
    assert false_positive_share(touching, reference) == pytest.approx(1 / 81)
    corner = np.zeros(reference.shape, bool)
    corner[:1, :1, :1] = True          # the false voxel's place: within it, all of the false share; outside, none
    assert false_positive_share(prediction, reference, corner) == pytest.approx(1 / 65)
    assert false_positive_share(prediction, reference, ~corner) == 0.0
    rows = [{"case": "a", "whole_tumour": 0.5}, {"case": "b", "whole_tumour": 1.0}]
    assert summarize(rows)["whole_tumour"] == {"mean": 0.75, "sd": pytest.approx(0.3536, abs=1e-4), "min": 0.5, "n": 2}


def test_evaluate_refuses_training_seeds_and_scores_held_out_ones(trained):
    result, _, _, _ = trained
    card = load_model_card(result.card)
    network = build_network(card, "cpu")
    with pytest.raises(ValueError, match="were used to train"):
        evaluate_generated(card, [51, 900], network=network, size="toy")
    rows = evaluate_generated(card, [900, 901], network=network, device="cpu", size="toy")
    assert [r["seed"] for r in rows] == [900, 901]
    for row in rows:
        for key in ("whole_tumour", "tumour_core", "enhancing", "whole_tumour_lcc", "false_positive_share"):
            assert 0.0 <= row[key] <= 1.0
        assert 0.0 <= row["false_positive_cerebellar_share"] <= row["false_positive_share"]


def test_segxai_evaluate_cli(trained, tmp_path, capsys):
    result, _, _, _ = trained
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(result.card), "--count", "2", "--size", "toy", "--seed-start", "910",
                 "--out", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["generated"]["seeds"] == [910, 911] and results["generated"]["summary"]["whole_tumour"]["n"] == 2
    assert (out / "results.csv").read_text().count("\n") == 3
    printed = capsys.readouterr().out
    assert "whole_tumour" in printed and "apart from the true tumour" in printed and "in the cerebellum" in printed
    assert results["generated"]["summary"]["false_positive_share"]["n"] == 2
    assert main(["evaluate", "--model", str(result.card), "--count", "0", "--out", str(out)]) == 2


def test_every_manifest_key_is_documented(trained):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training_format.md").read_text()
    manifest = json.loads(trained[0].manifest.read_text())
    documented = set(re.findall(r"`([a-z_.]+)`", doc))
    for key in manifest:
        assert key in documented or f"{key}.generator" in documented, key
    for key in manifest["training_set"]:
        assert f"training_set.{key}" in documented, key
    for key in manifest["checkpoints"][0]:
        assert key in doc.split("| `checkpoints` |")[1].split("\n")[0], key
    for key in manifest["schedule"]:
        assert key in doc.split("| `schedule` |")[1].split("\n")[0], key


def test_a_time_budget_longer_than_the_updates_still_ends_the_cosine_at_its_floor(tmp_path):
    """A fast machine does every update of the cap early: the rate must still fall to min_lr, not stop mid-way."""
    config = {**TINY, "schedule": {**TINY["schedule"], "horizon": "time", "steps": 12}, "time_budget_minutes": 30}
    result = train(config, tmp_path / "fast")
    manifest = read_manifest(result.manifest)
    rates = manifest["lr_history"]
    assert result.steps == 12 and len(rates) == 12
    # the last update is 9/10 of the way after warm-up, as with horizon: steps (the time used is ~0 of 30 min)
    assert rates[-1] == pytest.approx(learning_rate(11, 9 / 10, make_config(config)), rel=1e-3)
    assert rates[-1] < 0.05 * TINY["optimizer"]["lr"]
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))   # after warm-up it only falls


def test_the_default_recipe_is_the_shipped_models_but_for_how_it_ran():
    """``segxai train`` without --config trains configs/demo3d.yaml: the recipe the bundled 3D model ran,
    apart from its thread count and time budget (it ran single-threaded beside two other trainings)."""
    from napari_segxai.cli.train import demo_recipe
    from napari_segxai.core.io.paths import demo_model_card_path, sample_data_dir
    from napari_segxai.core.training.config import make_config

    assert demo_recipe() == sample_data_dir().parent / "configs" / "demo3d.yaml"
    recipe = make_config(load_config(demo_recipe()), source="recipe")
    ran = make_config(load_config(demo_model_card_path("demo3d").parent / "training" / "config.yaml"), source="recipe")
    ran["data"] = {**ran["data"], "dataset": None, "cases": recipe["data"]["cases"]}   # --data sample_data/realdata-tcga
    ran["kwargs"] = {**recipe["kwargs"], **ran["kwargs"]}                             # channels filled in from the data
    assert {key for key in recipe.keys() | ran.keys() if recipe.get(key) != ran.get(key)} == {"threads",
                                                                                             "time_budget_minutes"}
    assert recipe["threads"] == 2 and recipe["time_budget_minutes"] <= 60
