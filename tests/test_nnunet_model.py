"""nnU-Net v2 model folders as models: a real model trained by nnU-Net itself (tests/_nnunet.py), read as
nnU-Net reads it, predicting what nnUNetv2_predict predicts, explained fold by fold, and refusing bad folders."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_segxai.cli import main
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.ensemble import FoldEnsemble
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.nnunet import NnunetModelError
from napari_segxai.core.model.weights import UntrustedWeightsError

pytest.importorskip("nnunetv2")

#: How far our probabilities may stray from nnUNetv2_predict's: nnU-Net sums window logits in half precision,
#: so float32 rounding that differs between two processes (threads, kernels) can move a logit by one
#: half-precision step (2^-8 for logits of 4-8). Two logits moved a step apart move a probability by up to
#: 0.25 x 2^-7 ~ 2e-3. Measured: 1.5e-3 on a fold trained in one session, with torch's kernels and oneDNN alike.
HALF_PRECISION = 5e-3


def _case(nnunet_model):
    from napari_segxai.core.io.nifti import load_case

    return load_case(nnunet_model.case)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _nnunet_predict(nnunet_model, tmp_path: Path, folds=("0", "1"), extra=()) -> tuple[np.ndarray, np.ndarray]:
    """nnUNetv2_predict (the command) on the held-out case: labels and probabilities in the case's axis order."""
    inputs, outputs = tmp_path / "nnunet_in", tmp_path / "nnunet_out"
    inputs.mkdir()
    for c, modality in enumerate(("t1", "t1ce", "t2", "flair")):
        shutil.copy(nnunet_model.case / f"toy_{modality}.nii.gz", inputs / f"TOY_900_{c:04d}.nii.gz")
    command = [str(Path(sys.executable).parent / "nnUNetv2_predict"), "-i", str(inputs), "-o", str(outputs),
               "-d", "555", "-c", "3d_fullres", "-tr", "nnUNetTrainer_1epoch", "-f", *folds, "--save_probabilities",
               "-device", "cpu", "-npp", "1", "-nps", "1", *extra]
    subprocess.run(command, env=nnunet_model.env(), check=True, capture_output=True)
    labels = np.asarray(nib.load(outputs / "TOY_900.nii.gz").dataobj)
    probabilities = np.load(outputs / "TOY_900.npz")["probabilities"].transpose(0, 3, 2, 1)  # (K, z, y, x) -> x, y, z
    return labels, probabilities


def test_card_is_derived_from_the_folder(nnunet_model):
    card = load_model_card(nnunet_model.folder)
    assert card.architecture == "nnunet" and card.activation == "softmax"
    assert card.modalities == ("t1", "t1ce", "t2", "flair")
    assert [(c.name, c.label) for c in card.classes] == [("background", 0), ("necrosis", 1), ("edema", 2),
                                                        ("enhancing", 3)]
    plans = json.loads((nnunet_model.folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    assert list(card.roi_size) == plans["patch_size"] and card.overlap == 0.5
    assert card.source.folds == ("0", "1") and len(card.fold_weights) == 2
    assert isinstance(build_network(card), FoldEnsemble)
    one = load_model_card(nnunet_model.folder / "fold_1")  # a path to one fold uses that fold
    assert one.source.folds == ("1",) and one.fold_weights[0].parent.name == "fold_1"
    best = load_model_card(nnunet_model.folder, folds=["0"], checkpoint="best")
    assert best.fold_weights == (nnunet_model.folder / "fold_0" / "checkpoint_best.pth",)


def _without_outside(nnunet_model, card, labels, probabilities) -> None:
    """nnU-Net's prediction with segment()'s documented last step: background where no input has signal."""
    from napari_segxai.core.model.inference import outside_head, remove_outside_head

    remove_outside_head(probabilities, labels, outside_head(_case(nnunet_model), card), card)


def test_segment_reproduces_nnunet_predict(nnunet_model, tmp_path):
    """segxai segment on the folder = nnUNetv2_predict on the same case, folds and checkpoint."""
    expected_labels, expected_probabilities = _nnunet_predict(nnunet_model, tmp_path)
    _without_outside(nnunet_model, load_model_card(nnunet_model.folder), expected_labels, expected_probabilities)
    out = tmp_path / "ours"
    assert main(["segment", str(nnunet_model.case), "--model", str(nnunet_model.folder), "--out", str(out),
                 "--device", "cpu"]) == 0
    labels = np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    probabilities = np.moveaxis(np.asarray(nib.load(next(out.glob("*_prob.nii.gz"))).dataobj), -1, 0)
    assert labels.shape == expected_labels.shape
    for value in np.unique(np.concatenate([expected_labels.ravel(), labels.ravel()])):
        assert _dice(labels == value, expected_labels == value) >= 0.999, value
    assert np.abs(probabilities - expected_probabilities).max() <= HALF_PRECISION


def test_one_fold_without_mirroring_matches_nnunet_too(nnunet_model, tmp_path):
    from napari_segxai.core.model.inference import segment

    expected_labels, expected_probabilities = _nnunet_predict(nnunet_model, tmp_path, folds=("1",),
                                                              extra=("--disable_tta",))
    card = load_model_card(nnunet_model.folder, folds=["1"], mirroring=False)
    _without_outside(nnunet_model, card, expected_labels, expected_probabilities)
    result = segment(_case(nnunet_model), card, device="cpu")
    assert (result.labels == expected_labels).mean() >= 0.999
    assert np.abs(result.probabilities - expected_probabilities).max() <= HALF_PRECISION


def test_ensemble_explanation_is_the_mean_of_the_folds(nnunet_model):
    """Explaining two folds = the mean of each fold's map for the same (ensemble) target."""
    from napari_segxai.core.attribution.explain_case import explain_case
    from napari_segxai.core.model.inference import segment

    card = load_model_card(nnunet_model.folder)
    case = _case(nnunet_model)
    ensemble = build_network(card)
    region = segment(case, card, network=ensemble, device="cpu").labels == 2
    assert region.any()
    both = explain_case(case, card, method="gradient_x_input", classes=["edema"], target="region", region=region,
                        network=ensemble, device="cpu")
    each = [explain_case(case, card, method="gradient_x_input", classes=["edema"], target="region", region=region,
                         network=member, device="cpu").relevance for member in ensemble.members]
    assert not np.allclose(each[0], each[1])
    np.testing.assert_allclose(both.relevance, (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-6)


#: Methods whose rule can leave a class's map empty on a real target (a 1-epoch model's rectifiers or channels
#: all against it; it varies between fixture builds): then the result must say so (test_attribution shows when).
RULE_CAN_EMPTY = ("grad_cam", "guided_backprop", "deconvolution")


@pytest.mark.parametrize("method", ["saliency", "gradient_x_input", "smoothgrad", "integrated_gradients", "grad_cam",
                                    "guided_backprop", "deconvolution", "deeplift", "lrp", "meaningful_perturbation"])
def test_methods_explain_an_nnunet_model(nnunet_model, method):
    from napari_segxai.core.attribution.explain_case import explain_case

    card = load_model_card(nnunet_model.folder, folds=["0"], mirroring=False)
    relevance = explain_case(_case(nnunet_model), card, method=method, classes=["edema"], device="cpu")
    assert relevance.relevance.shape[-3:] == _case(nnunet_model).shape
    assert np.isfinite(relevance.relevance).all()
    if method in RULE_CAN_EMPTY and relevance.zero_classes:
        assert relevance.zero_line().startswith(f"The {method} map of edema is zero everywhere")
    else:
        assert np.abs(relevance.relevance).sum() > 0 and not relevance.zero_classes


def test_card_command_writes_a_card_that_reads_back_with_edits(nnunet_model, tmp_path):
    import yaml

    path = tmp_path / "card.yaml"
    assert main(["card", str(nnunet_model.folder), "--folds", "0", "--out", str(path)]) == 0
    raw = yaml.safe_load(path.read_text())
    assert raw["source"]["folds"] == [0] and raw["preprocessing"]["normalization"] == "nnunet"
    raw["name"] = "Toy tumour model"
    raw["classes"][2]["name"] = "oedema"
    raw["inference"]["overlap"] = 0.25
    path.write_text(yaml.safe_dump(raw))
    card = load_model_card(path)
    assert card.name == "Toy tumour model" and card.class_names[2] == "oedema" and card.overlap == 0.25
    assert card.source.folds == ("0",)
    assert main(["card", str(nnunet_model.folder), "--out", str(path)]) == 2  # never overwrites
    raw["preprocessing"]["spacing"] = [1.0, 1.0, 1.0]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="preprocessing.spacing.*cannot be changed"):
        load_model_card(path)


def _copy_model(nnunet_model, tmp_path) -> Path:
    folder = tmp_path / nnunet_model.folder.name
    shutil.copytree(nnunet_model.folder, folder, ignore=shutil.ignore_patterns("validation", "*.png", "*.txt"))
    return folder


def _refused(nnunet_model, tmp_path, model: Path, match: str, *extra: str, capsys=None) -> None:
    out = tmp_path / "out"
    assert main(["segment", str(nnunet_model.case), "--model", str(model), "--out", str(out), *extra]) == 2
    assert not out.exists() or not any(out.iterdir())
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.count(". ") <= 2, err
    assert match in err, err


def test_bad_folders_get_one_sentence_and_nothing_written(nnunet_model, tmp_path, capsys):
    folder = _copy_model(nnunet_model, tmp_path)
    no_folds = tmp_path / "no_folds" / folder.name
    no_folds.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(folder / name, no_folds / name)
    _refused(nnunet_model, tmp_path, no_folds, "has no trained fold", capsys=capsys)

    truncated = folder / "fold_1" / "checkpoint_final.pth"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    _refused(nnunet_model, tmp_path, folder, "is not a readable PyTorch file", capsys=capsys)
    _refused(nnunet_model, tmp_path, folder, "no fold_7", "--folds", "7", capsys=capsys)

    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = \
        "dynamic_network_architectures.architectures.unet.UNetFromTheFuture"
    (folder / "plans.json").write_text(json.dumps(plans))
    _refused(nnunet_model, tmp_path, folder, "newer nnU-Net", "--folds", "0", capsys=capsys)

    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    _refused(nnunet_model, tmp_path, folder, "--trust-model", "--folds", "0", capsys=capsys)


def test_channel_names_that_match_no_modality_are_named(nnunet_model, tmp_path, capsys):
    folder = _copy_model(nnunet_model, tmp_path)
    dataset = json.loads((folder / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "CT", "1": "PET", "2": "T2", "3": "FLAIR"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    _refused(nnunet_model, tmp_path, folder, "has no ct, pet channels", "--folds", "0", capsys=capsys)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(_Payload.target),))


def test_a_checkpoint_carrying_a_payload_does_not_run(nnunet_model, tmp_path):
    folder = _copy_model(nnunet_model, tmp_path)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    _Payload.target = str(tmp_path / "payload-ran")
    content["init_args"]["extra"] = _Payload()
    torch.save(content, checkpoint)
    with pytest.raises(UntrustedWeightsError, match="trusted"):
        build_network(load_model_card(folder, folds=["0"]))
    assert not (tmp_path / "payload-ran").exists()
    build_network(load_model_card(folder, folds=["0"], trusted=True))  # trusted by the user: it loads (and runs)
    assert (tmp_path / "payload-ran").exists()


def test_a_folder_without_nnunet_installed_says_what_to_install(nnunet_model, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nnunet(name, *args, **kwargs):
        if name.startswith("nnunetv2"):
            raise ImportError("No module named 'nnunetv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nnunet)
    with pytest.raises(NnunetModelError, match=r"pip install 'napari-segxai\[nnunet\]'"):
        load_model_card(nnunet_model.folder)


def test_tracin_traces_an_nnunet_model_to_its_raw_dataset(nnunet_model, tmp_path, monkeypatch):
    """TracIn over the fold's training cases (nnU-Net's split) with the checkpoints nnU-Net kept."""
    import csv

    from napari_segxai.core.influence import training_record

    card = load_model_card(nnunet_model.folder)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(ValueError, match="--training-data"):
        training_record(card)
    monkeypatch.setenv("nnUNet_preprocessed", str(nnunet_model.root / "preprocessed"))
    record = training_record(dataclasses.replace(card, training_data=nnunet_model.raw))
    splits = json.loads((nnunet_model.root / "preprocessed" / "Dataset555_SegxaiToy" / "splits_final.json").read_text())
    assert [c.name for c in record.cases] == sorted(splits[0]["train"])
    # best and final of the one epoch are the same update: one checkpoint, at nnU-Net's logged learning rate
    assert [c.path.name for c in record.checkpoints] == ["checkpoint_final.pth"]
    logged = torch.load(record.checkpoints[0].path, weights_only=False)["logging"]["lrs"][0]
    assert record.checkpoints[0].lr == pytest.approx(logged)
    monkeypatch.delenv("nnUNet_preprocessed")  # without the preprocessed folder: nnU-Net's default split, the same
    assert [c.name for c in training_record(dataclasses.replace(card, training_data=nnunet_model.raw)).cases] == \
        [c.name for c in record.cases]

    folder = _copy_model(nnunet_model, tmp_path)  # the index is written beside the fold's checkpoints
    out = tmp_path / "tracin"
    # the oedema the fixture guarantees, wherever it is the most likely class (the one-epoch model's probabilities are low)
    assert main(["influence", str(nnunet_model.case), "--model", str(folder), "--training-data",
                 str(nnunet_model.raw), "--class", "edema", "--threshold", "0", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "held_out_influence.csv").open()))
    assert {r["training_case"] for r in rows} <= {c.name for c in record.cases} and rows
    assert list((folder / "fold_0" / "influence").glob("index-*.npz"))


def _variant(nnunet_model, tmp_path, *, configuration="3d_fullres", labels=None, regions_class_order=None) -> Path:
    """The toy model folder as another configuration or label scheme, with nnU-Net-initialised random weights
    (for checking that prediction follows nnU-Net exactly; the weights need no training for that)."""
    from napari_segxai.core.model.architectures import create_network

    folder = tmp_path / f"nnUNetTrainer_1epoch__nnUNetPlans__{configuration}"
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(nnunet_model.folder / "plans.json", folder / "plans.json")
    dataset = json.loads((nnunet_model.folder / "dataset.json").read_text())
    if labels is not None:
        dataset.update(labels=labels, regions_class_order=regions_class_order)
    (folder / "dataset.json").write_text(json.dumps(dataset))
    architecture = json.loads((folder / "plans.json").read_text())["configurations"][configuration]["architecture"]
    outputs = len(regions_class_order) if regions_class_order else len(dataset["labels"])
    torch.manual_seed(3)
    network = create_network("nnunet", {"network_class_name": architecture["network_class_name"],
                                        "arch_kwargs": architecture["arch_kwargs"],
                                        "arch_kwargs_req_import": architecture["_kw_requires_import"],
                                        "input_channels": 4, "output_channels": outputs})
    content = torch.load(nnunet_model.folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    content["network_weights"] = network.state_dict()
    content["init_args"]["configuration"] = configuration
    dims = len(json.loads((folder / "plans.json").read_text())["configurations"][configuration]["patch_size"])
    content["inference_allowed_mirroring_axes"] = tuple(range(dims))
    torch.save(content, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def _predictor_output(folder: Path, nnunet_model):
    """nnUNetPredictor on the held-out case (labels and probabilities in the case's axis order)."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    files = [str(nnunet_model.case / f"toy_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")]
    image, properties = SimpleITKIO().read_images(files)
    labels, probabilities = predictor.predict_single_npy_array(image, properties, None, None, True)
    return labels.transpose(2, 1, 0), probabilities.transpose(0, 3, 2, 1)


def test_region_based_models_read_regions_with_sigmoid_and_nnunet_label_order(nnunet_model, tmp_path):
    from napari_segxai.core.model.inference import segment

    folder = _variant(nnunet_model, tmp_path, labels={"background": 0, "whole tumour": [1, 2, 3],
                                                       "tumour core": [1, 3], "enhancing": 3},
                      regions_class_order=[2, 1, 3])
    card = load_model_card(folder)
    assert card.activation == "sigmoid"
    assert [(c.name, c.label) for c in card.classes] == [("whole tumour", 2), ("tumour core", 1), ("enhancing", 3)]
    expected_labels, expected_probabilities = _predictor_output(folder, nnunet_model)
    _without_outside(nnunet_model, card, expected_labels, expected_probabilities)
    result = segment(_case(nnunet_model), card, device="cpu")
    np.testing.assert_array_equal(result.labels, expected_labels)
    assert np.abs(result.probabilities - expected_probabilities).max() <= HALF_PRECISION
    assert len(np.unique(result.labels)) > 1


def test_a_2d_configuration_predicts_slice_by_slice_as_nnunet_does(nnunet_model, tmp_path):
    from napari_segxai.core.attribution.explain_case import explain_case
    from napari_segxai.core.model.inference import segment

    folder = _variant(nnunet_model, tmp_path, configuration="2d")
    card = load_model_card(folder)
    assert card.spatial_dims == 2 and card.slice_axis == 0
    expected_labels, expected_probabilities = _predictor_output(folder, nnunet_model)
    _without_outside(nnunet_model, card, expected_labels, expected_probabilities)
    result = segment(_case(nnunet_model), card, device="cpu")
    assert (result.labels == expected_labels).mean() >= 0.999
    assert np.abs(result.probabilities - expected_probabilities).max() <= HALF_PRECISION
    relevance = explain_case(_case(nnunet_model), card, method="saliency", classes=[1], target="voxel",
                             voxel=(16, 16, 16), device="cpu")
    assert relevance.relevance.shape[-3:] == _case(nnunet_model).shape and np.abs(relevance.relevance).sum() > 0


def test_report_trust_and_cohort_run_on_an_nnunet_folder(nnunet_model, tmp_path):
    """The case report, the trust measures and a cohort run take the folder as --model, end to end."""
    import csv

    model = str(nnunet_model.folder)
    report = tmp_path / "report"
    assert main(["report", str(nnunet_model.case), "--model", model, "--method", "saliency", "--no-influence",
                 "--out", str(report)]) == 0
    assert (report / "report.html").is_file() and "Dataset555_SegxaiToy" in (report / "report.html").read_text()
    trust = tmp_path / "trust"
    assert main(["trust", str(nnunet_model.case), "--model", model, "--folds", "0", "--no-mirroring", "--methods",
                 "saliency", "--classes", "edema", "--max-steps", "2", "--modes", "cascading", "--subsets", "4",
                 "--deletion-steps", "4", "--noise-samples", "1", "--out", str(trust)]) == 0
    rows = list(csv.DictReader((trust / "sanity.csv").open()))
    assert rows and any("decoder" in r.get("layer", "") or "encoder" in r.get("layer", "") for r in rows)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "held_out").symlink_to(nnunet_model.case)
    cohort = tmp_path / "cohort"
    assert main(["cohort", str(cases), "--model", model, "--folds", "0", "--out", str(cohort)]) == 2
    card = tmp_path / "card.yaml"
    assert main(["card", model, "--folds", "0", "--no-mirroring", "--out", str(card)]) == 0
    assert main(["cohort", str(cases), "--model", str(card), "--method", "saliency", "--workers", "1",
                 "--out", str(cohort)]) == 0
    assert list(cohort.rglob("*.csv"))


def test_lrp_on_an_nnunet_residual_encoder_goes_through_the_residual_canonizer():
    """nnU-Net ResEnc blocks add their skip in place; the registered canonizer makes LRP run and conserve."""
    from napari_segxai.core.attribution import get_method
    from napari_segxai.core.attribution.targets import region_target
    from napari_segxai.core.model.architectures import create_network, residual_block_forwards
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD

    assert BasicBlockD in residual_block_forwards()
    kwargs = {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
              "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
                              "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                              "n_blocks_per_stage": [1, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                              "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                              "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
              "arch_kwargs_req_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
              "input_channels": 2, "output_channels": 3}
    torch.manual_seed(0)
    network = create_network("nnunet", kwargs).eval()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    region = np.zeros((16,) * 3, bool)
    region[4:12, 4:12, 4:12] = True
    target = region_target(region, [1, 2], 3)
    relevance = get_method("lrp", composite="epsilon_gamma_box", start="logit", zero_bias=True).attribute(
        network, x, target)
    with torch.no_grad():
        started = target.scalars(network(x))[0]
    torch.testing.assert_close(relevance.flatten(1).sum(1), started, rtol=0.03, atol=0.0)
