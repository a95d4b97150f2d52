"""Model cards: parsing, one clear error per wrong field, the architecture registry, build_network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from _cards import DELETE, TINY_CARD, write_card
from napari_segxai.core.model import card as model_card_module
from napari_segxai.core.model.architectures import ARCHITECTURES, create_network, known_architectures
from napari_segxai.core.model.card import (
    ClassInfo, ModelCard, ModelCardError, build_network, default_model_card,
)
from napari_segxai.core.io.paths import sample_data_dir
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.weights import UntrustedWeightsError, load_state_dict, save_state_dict


def test_valid_card_loads_with_absolute_paths_and_defaults(tmp_path):
    path = write_card(tmp_path / "m", description=DELETE, trusted=DELETE)
    card = load_model_card(path)
    assert isinstance(card, ModelCard)
    assert card.path == path.resolve() and card.weights == (tmp_path / "m" / "weights.safetensors").resolve()
    assert card.modalities == ("flair", "t1") and card.spatial_dims == 3 and card.slice_axis is None
    assert card.classes[1] == ClassInfo(name="edema", label=2, color="#3cb44b")
    assert card.label_values == (0, 2, 4) and card.class_names == ("background", "edema", "core")
    assert card.orientation == "RAS" and card.spacing == (2.0, 2.0, 2.0)
    assert card.roi_size == (16, 16, 16) and card.overlap == 0.25 and card.sw_batch_size == 2 and card.mirror_axes == ()
    assert card.description == "" and card.trusted is False and card.training is None
    assert load_model_card(tmp_path / "m") == card  # a folder means its card.yaml
    hash(card)


def test_weights_and_training_paths_are_relative_to_the_card(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    (tmp_path / "m" / "sub" / "manifest.json").write_text("{}")
    path = write_card(tmp_path / "m", training="sub/manifest.json", filename="other.yaml")
    card = load_model_card(path)
    assert card.training == (tmp_path / "m" / "sub" / "manifest.json").resolve()
    # training_data: where the training files are; it may be absent here (TracIn then lists them without pictures)
    path = write_card(tmp_path / "m", training_data="../data", filename="third.yaml")
    assert load_model_card(path).training_data == (tmp_path / "data").resolve()
    with pytest.raises(ValueError, match="training_data"):
        load_model_card(write_card(tmp_path / "m", training_data=3, filename="fourth.yaml"))


# Each bad card: overrides of the tiny card -> words the one-sentence error must contain.
BAD_CARDS = {
    "missing name": ({"name": DELETE}, ["'name' is missing"]),
    "missing modalities": ({"modalities": DELETE}, ["'modalities' is missing"]),
    "missing classes": ({"classes": DELETE}, ["'classes' is missing"]),
    "missing weights": ({"weights": DELETE}, ["'weights' is missing"]),
    "missing roi": ({"inference": {"roi_size": DELETE}}, ["'inference.roi_size' is missing"]),
    "unknown architecture": ({"architecture": "UNetPlusPlusPro"}, ["'architecture'", "UNetPlusPlusPro", "SegResNet"]),
    "kwargs not a mapping": ({"kwargs": [1, 2]}, ["'kwargs'", "mapping"]),
    "weights file absent": ({"weights": "nowhere.safetensors"}, ["'weights'", "nowhere.safetensors", "does not exist"]),
    "trusted not boolean": ({"trusted": "yes"}, ["'trusted'", "true or false"]),
    "name not text": ({"name": 12}, ["'name'", "text"]),
    "spatial_dims 4": ({"spatial_dims": 4}, ["'spatial_dims'", "use 3"]),
    "2d without slice axis": ({"spatial_dims": 2, "kwargs": {"spatial_dims": 2, "in_channels": 2, "out_channels": 3,
                                                            "channels": [4, 8], "strides": [2]}},
                              ["'slice_axis' is missing"]),
    "slice axis 3": ({"spatial_dims": 2, "slice_axis": 3,
                      "kwargs": {"spatial_dims": 2, "in_channels": 2, "out_channels": 3, "channels": [4, 8],
                                 "strides": [2]}}, ["'slice_axis' is 3"]),
    "slice axis on a 3d model": ({"slice_axis": 1}, ["'slice_axis'", "slice-wise"]),
    "kwargs dims differ": ({"spatial_dims": 2, "slice_axis": 2}, ["'kwargs'", "spatial_dims 3"]),
    "classes vs out_channels": ({"classes": [{"name": "bg", "label": 0}, {"name": "t", "label": 1}]},
                                ["'classes'", "2 classes", "out_channels 3"]),
    "in_channels vs modalities": ({"modalities": ["t1", "t2", "flair"]}, ["'kwargs'", "in_channels 2", "3 input"]),
    "duplicate modality": ({"modalities": ["t1", "T1"]}, ["'modalities'", "twice"]),
    "empty modalities": ({"modalities": []}, ["'modalities'", "non-empty list"]),
    "duplicate label": ({"classes": [{"name": "a", "label": 0}, {"name": "b", "label": 1}, {"name": "c", "label": 1}]},
                        ["'classes'", "same label"]),
    "class without label": ({"classes": [{"name": "a", "label": 0}, {"name": "b"}, {"name": "c", "label": 2}]},
                            ["'classes[1].label' is missing"]),
    "bad colour": ({"classes": [{"name": "a", "label": 0}, {"name": "b", "label": 1, "color": "red"},
                                {"name": "c", "label": 2}]}, ["'classes[1].color'", "hex"]),
    "unknown activation": ({"activation": "relu"}, ["'activation'", "softmax, sigmoid"]),
    "unknown normalization": ({"preprocessing": {"normalization": "histogram"}},
                              ["'preprocessing.normalization'", "zscore_nonzero"]),
    "unknown spacing policy": ({"preprocessing": {"spacing_policy": "maybe"}},
                               ["'preprocessing.spacing_policy'", "resample, refuse, ignore"]),
    "bad orientation": ({"preprocessing": {"orientation": "RAR"}}, ["'preprocessing.orientation'", "RAS"]),
    "negative spacing": ({"preprocessing": {"spacing": [1, -1, 1]}}, ["'preprocessing.spacing'", "positive"]),
    "roi of wrong length": ({"inference": {"roi_size": [16, 16]}}, ["'inference.roi_size'", "3 positive"]),
    "overlap 1.5": ({"inference": {"overlap": 1.5}}, ["'inference.overlap'", "[0, 1)"]),
    "batch 0": ({"inference": {"sw_batch_size": 0}}, ["'inference.sw_batch_size'"]),
    "blend mode": ({"inference": {"mode": "median"}}, ["'inference.mode'", "gaussian"]),
    "mirror axis 3": ({"inference": {"mirror_axes": [0, 3]}}, ["'inference.mirror_axes'", "0 to 2"]),
    "mirror axis twice": ({"inference": {"mirror_axes": [1, 1]}}, ["'inference.mirror_axes'", "distinct"]),
    "mirror axes not a list": ({"inference": {"mirror_axes": "x"}}, ["'inference.mirror_axes'", "[] for none"]),
    "mirror axes nested": ({"inference": {"mirror_axes": [[0]]}}, ["'inference.mirror_axes'", "distinct axes"]),
    "misspelt field": ({"activaton": "softmax"}, ["unknown field", "'activaton'", "activation"]),
    "misspelt inference field": ({"inference": {"overlapp": 0.5}}, ["'overlapp'", "in 'inference'"]),
    "training absent": ({"training": "training/manifest.json"}, ["'training'", "does not exist"]),
    "torchscript with kwargs": ({"architecture": "torchscript"}, ["'kwargs'", "torchscript"]),
}


@pytest.mark.parametrize("overrides, words", BAD_CARDS.values(), ids=BAD_CARDS.keys())
def test_each_bad_field_gives_one_sentence_naming_card_and_field(tmp_path, overrides, words):
    write_card(tmp_path / "m")  # the tiny card's weights file
    path = write_card(tmp_path / "m", save_weights=False, **overrides)
    with pytest.raises(ModelCardError) as info:
        load_model_card(path)
    message = str(info.value)
    assert message.startswith(f"Model card {path.resolve()}")
    for word in words:
        assert word in message, message
    assert message.count("\n") == 0 and message.endswith(".")


def test_not_yaml_not_a_mapping_and_no_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ModelCardError, match="is not valid YAML"):
        load_model_card(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ModelCardError, match="must be a YAML mapping"):
        load_model_card(tmp_path / "list.yaml")
    with pytest.raises(ModelCardError, match="does not exist"):
        load_model_card(tmp_path / "absent.yaml")


# The smallest working arguments of every registered architecture: (kwargs, input spatial size).
TINY_ARCHITECTURES = {
    "UNet": ({"channels": [4, 8], "strides": [2]}, 16),
    "BasicUNet": ({"features": [4, 4, 8, 8, 16, 4]}, 32),
    "AttentionUnet": ({"channels": [4, 8], "strides": [2]}, 16),
    "SegResNet": ({"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]}, 16),
    "SegResNetDS": ({"init_filters": 4, "blocks_down": [1, 1], "norm": "instance"}, 16),
    "DynUNet": ({"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
                 "filters": [4, 8, 8]}, 16),
    "UNETR": ({"img_size": 32, "feature_size": 4, "hidden_size": 24, "mlp_dim": 48, "num_heads": 2}, 32),
    "SwinUNETR": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "norm_name": "batch"}, 32),
    "VNet": ({"dropout_prob_down": 0.0, "dropout_prob_up": [0.0, 0.0]}, 16),
    "HighResNet": ({"layer_params": [{"name": "conv_0", "n_features": 4, "kernel_size": 3},
                                     {"name": "res_1", "n_features": 4, "kernels": [3, 3], "repeat": 1},
                                     {"name": "conv_1", "n_features": 8, "kernel_size": 1},
                                     {"name": "conv_2", "kernel_size": 1}]}, 16),
}


#: Families whose kwargs are not MONAI's (spatial_dims, in_channels, out_channels): complete kwargs, window size.
TINY_FAMILY_KWARGS = {
    "nnunet": ({"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                                "kernel_sizes": [[3, 3, 3]] * 2, "strides": [[1, 1, 1], [2, 2, 2]],
                                "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                                "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                "nonlin_kwargs": {"inplace": True}},
                "arch_kwargs_req_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                "input_channels": 2, "output_channels": 3}, 16),
}


def test_every_registered_architecture_has_a_tiny_test_case():
    assert set(TINY_ARCHITECTURES) | set(TINY_FAMILY_KWARGS) == set(ARCHITECTURES)
    assert known_architectures()[-1] == "torchscript"


@pytest.mark.parametrize("name", sorted(TINY_ARCHITECTURES) + sorted(TINY_FAMILY_KWARGS))
def test_registered_architecture_builds_from_a_card_and_segments_a_window(tmp_path, name):
    if name in TINY_FAMILY_KWARGS:
        pytest.importorskip("nnunetv2")
        kwargs, size = TINY_FAMILY_KWARGS[name]
    else:
        extra, size = TINY_ARCHITECTURES[name]
        kwargs = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, **extra}
    torch.manual_seed(0)
    original = create_network(name, kwargs).eval()
    save_state_dict(original.state_dict(), tmp_path / "m" / "weights.safetensors")
    card = load_model_card(write_card(tmp_path / "m", architecture=name, kwargs=kwargs,
                                      inference={"roi_size": [size] * 3}))
    network = build_network(card)
    assert not network.training
    x = torch.randn(1, 2, size, size, size)
    with torch.no_grad():
        out = network(x)
        assert out.shape == (1, 3, size, size, size)
        torch.testing.assert_close(out, original(x))


def test_bad_kwargs_name_the_kwargs_field(tmp_path):
    with pytest.raises(ValueError, match=r"field 'kwargs' does not build a UNet: .*strides"):
        create_network("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8]})
    path = write_card(tmp_path / "m", save_weights=False,
                      kwargs={"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8],
                              "strides": [2], "no_such_option": 1})
    save_state_dict({"w": torch.zeros(1)}, tmp_path / "m" / "weights.safetensors")
    with pytest.raises(ValueError, match=rf"Model card {path.resolve()}: field 'kwargs' .*no_such_option"):
        build_network(load_model_card(path))
    with pytest.raises(ValueError, match="field 'architecture' is 'Nope'.*UNet"):
        create_network("Nope", {})


def test_weights_that_do_not_match_the_architecture_name_file_and_keys(tmp_path):
    path = write_card(tmp_path / "m")  # weights of UNet (4, 8)
    text = yaml.safe_load(path.read_text())
    text["kwargs"]["channels"] = [4, 16]
    path.write_text(yaml.safe_dump(text))
    with pytest.raises(ValueError, match=r"weights.safetensors does not match .*shape mismatch model\.") as info:
        build_network(load_model_card(path))
    assert "in the file vs" in str(info.value)


def test_torchscript_card(tmp_path):
    folder = tmp_path / "ts"
    folder.mkdir()
    torch.manual_seed(0)
    network = create_network("UNet", dict(TINY_CARD["kwargs"])).eval()
    torch.jit.save(torch.jit.script(network), str(folder / "net.pt"))
    with pytest.raises(ModelCardError, match="is a TorchScript archive; set architecture to torchscript"):
        load_model_card(write_card(folder, save_weights=False, weights="net.pt"))
    card = load_model_card(write_card(folder, architecture="torchscript", kwargs={}, weights="net.pt"))
    with pytest.raises(UntrustedWeightsError, match="TorchScript program.*'trusted: true'.*--trust-model"):
        build_network(card)   # an archive is a program: never run unless the user trusts it
    with pytest.raises(UntrustedWeightsError, match="TorchScript program"):
        load_state_dict(folder / "net.pt")   # reading its weights alone also loads the program
    assert set(load_state_dict(folder / "net.pt", trusted=True)) == set(network.state_dict())
    trusted = load_model_card(write_card(folder, architecture="torchscript", kwargs={}, weights="net.pt", trusted=True))
    scripted = build_network(trusted)
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network(x))


def test_default_model_card(tmp_path, monkeypatch):
    monkeypatch.setattr(model_card_module, "demo_model_card_path", lambda kind="demo3d": tmp_path / "none" / "card.yaml")
    with pytest.raises(ModelCardError, match="bundled demo model is missing.*--model"):
        default_model_card()
    path = write_card(tmp_path / "demo3d")
    monkeypatch.setattr(model_card_module, "demo_model_card_path", lambda kind="demo3d": path)
    assert default_model_card().path == path.resolve()


def test_bundled_demo_card_loads_when_present():
    path = sample_data_dir() / "models" / "demo3d" / "card.yaml"
    if not path.is_file():
        pytest.skip("the demo model has not been trained into sample_data yet")
    card = default_model_card()
    assert card.path == path.resolve() and card.spatial_dims == 3
    network = build_network(card)
    assert sum(p.numel() for p in network.parameters()) > 0


def test_sample_data_dir_is_the_repository_folder_in_an_editable_install():
    import napari_segxai

    package = Path(napari_segxai.__file__).resolve().parent
    if (package / "sample_data").is_dir():
        pytest.skip("installed from a wheel: the package carries its own sample_data")
    assert sample_data_dir() == Path(__file__).resolve().parents[1] / "sample_data"
