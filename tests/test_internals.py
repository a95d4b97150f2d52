"""Inside the network (issue 22): layer tree, feature maps on the case grid, filters, activation maximisation and
the surrogate, on tiny networks whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from _cards import lps_affine, write_card
from napari_segxai.core.internals.case_maximise import maximise_case
from napari_segxai.core.internals.case_surrogate import case_surrogate
from napari_segxai.core.internals.features import channel_stats, feature_maps, iter_feature_maps
from napari_segxai.core.internals.filters import (first_convolution, kernel_montage, patch_montage, save_montage,
                                                  strongest_patches)
from napari_segxai.core.internals.layers import feature_layers, find_layer, layer_tree, recording
from napari_segxai.core.internals.maximise import channel_objective, class_objective, maximise
from napari_segxai.core.internals.surrogate import fit_surrogate, voxel_features
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.architectures import create_network
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.preprocess import preprocess

AFFINE = lps_affine(spacing=(2.0, 2.0, 2.0))
UNET = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2],
        "num_res_units": 1}


@pytest.fixture
def case_and_card(tiny_case_dir, tmp_path):
    folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), name="Case001")
    return load_case(folder), load_model_card(write_card(tmp_path / "card"))


def _hooks(network: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in network.modules())


def test_layer_tree_of_a_monai_unet_has_every_module_with_its_output_shape():
    network = create_network("UNet", UNET).eval()
    tree = layer_tree(network, torch.zeros(1, 2, 16, 16, 16))
    names = [layer.name for layer in tree]
    assert names == [name for name, _ in network.named_modules() if name]
    first = tree[names.index("model.0.conv.unit0.conv")]
    assert (first.kind, first.output_shape, first.channels) == ("Conv3d", (1, 4, 8, 8, 8), 4)
    assert tree[0].output_shape == (1, 3, 16, 16, 16)
    assert all(layer.output_shape is not None for layer in feature_layers(tree, 3))
    assert _hooks(network) == 0


def test_layer_tree_of_the_tiny_card_and_hooks_removed_after_an_error(case_and_card):
    _, card = case_and_card
    network = build_network(card, "cpu")
    tree = layer_tree(network, torch.zeros(1, 2, 16, 16, 16))
    assert {"model.0.conv", "model.1.submodule.conv", "model.2.conv"} <= {layer.name for layer in tree}
    assert "model.1.submodule.conv (Conv3d): 8 x 8 x 8 x 8" in [layer.describe().strip() for layer in tree]
    with pytest.raises(RuntimeError):
        with recording(network, ["model.0.conv"]):
            network(torch.zeros(1, 3, 16, 16, 16))  # wrong channel count
    assert _hooks(network) == 0
    with pytest.raises(ValueError, match="no layer called 'model.0.conf'.*Did you mean model.0.conv"):
        find_layer(network, "model.0.conf")


def test_a_torchscript_network_lists_its_modules_without_shapes_and_refuses_recording():
    scripted = torch.jit.script(nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU()))
    tree = layer_tree(scripted, torch.zeros(1, 1, 4, 4, 4))
    assert [layer.name for layer in tree] == ["0", "1"] and all(layer.output_shape is None for layer in tree)
    with pytest.raises(ValueError, match="TorchScript"):
        with recording(scripted, ["0"]):
            pass


def test_feature_maps_are_on_the_case_grid_and_equal_the_layer_output_on_one_padded_window(
        tiny_case_dir, tmp_path):
    folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 12), name="Case001")
    case = load_case(folder)
    card = load_model_card(write_card(tmp_path / "card", inference={"roi_size": [16, 16, 16]}))
    network = build_network(card, "cpu")
    result = feature_maps(case, card, "model.1.submodule.conv", network=network, device="cpu", keep=3)
    assert result.maps.shape == (3,) + case.shape and result.n_channels == 8 and result.windows == 1
    np.testing.assert_allclose(result.affine, case.affine)
    assert result.labels.shape == case.shape
    image, grid = preprocess(case, card)
    # the window is larger than the grid on one axis: padded with zeros first, half before, as MONAI pads it
    missing = [16 - s for s in image.shape[2:]]
    assert sorted(missing) == [0, 0, 4]
    pad = [v for m in reversed(missing) for v in (m // 2, m - m // 2)]
    inside = (0, slice(None)) + tuple(slice(m // 2, m // 2 + s) for m, s in zip(missing, image.shape[2:]))
    with recording(network, ["model.1.submodule.conv"]) as out, torch.no_grad():
        network(torch.nn.functional.pad(image, pad))
    direct = torch.nn.functional.interpolate(out["model.1.submodule.conv"], size=(16, 16, 16), mode="trilinear")
    direct = direct[inside]
    for i, c in enumerate(result.channels):
        np.testing.assert_allclose(result.maps[i], grid.to_case_grid(direct[c]).numpy(), atol=1e-4)
    # one channel per pass (the smallest memory budget) gives the same maps and statistics
    small = feature_maps(case, card, "model.1.submodule.conv", network=network, device="cpu", keep=3, budget_bytes=1)
    assert small.channels == result.channels
    np.testing.assert_allclose(small.maps, result.maps, atol=1e-5)
    np.testing.assert_allclose(small.stats.spread, result.stats.spread, rtol=1e-6)
    # several layers sharing passes of three channels (model.0.conv's four split over two) give the same results
    first = feature_maps(case, card, "model.0.conv", network=network, device="cpu", keep=3)
    both = list(iter_feature_maps(case, card, ["model.0.conv", "model.1.submodule.conv"], network=network,
                                  device="cpu", keep=3, budget_bytes=3 * 4 * int(np.prod(image.shape[2:]))))
    assert [m.layer for m in both] == ["model.0.conv", "model.1.submodule.conv"]
    for alone, shared in zip((first, result), both):
        assert shared.channels == alone.channels
        np.testing.assert_allclose(shared.maps, alone.maps, atol=1e-5)
        np.testing.assert_allclose(shared.stats.specificity, alone.stats.specificity, atol=1e-5)
    assert _hooks(network) == 0


class _ReadsSecondSequence(nn.Module):
    """Channel 0 copies sequence 1, channel 1 its negative, channel 2 sequence 0; edema = sequence 1 above 1."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv3d(2, 3, 1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 1] = 1.0
            self.features.weight[1, 1] = -1.0
            self.features.weight[2, 0] = 1.0

    def forward(self, x):
        f = self.features(x)
        zero = torch.zeros_like(f[:, :1])
        return torch.cat([zero, 10 * (f[:, :1] - 1.0), zero - 100], 1)


def test_the_channel_that_drives_a_class_is_ranked_most_specific_for_it(case_and_card):
    case, card = case_and_card
    result = feature_maps(case, card, "features", network=_ReadsSecondSequence(), device="cpu", keep=3)
    stats = result.stats
    assert int(stats.order()[0]) == 0 and stats.class_names[int(stats.preferred[0])] == "edema"
    assert stats.specificity[1, 1] < 0 < stats.specificity[0, 1]
    assert stats.rows(1)[0]["class"] == "edema"


def test_channel_stats_inside_and_outside_a_class():
    maps = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    masks = torch.tensor([[False, False, True, True], [True, True, False, False]])
    stats = channel_stats(maps, masks, torch.ones(4, dtype=torch.bool), ("background", "lesion"), (1,))
    np.testing.assert_allclose(stats.mean_inside[:, 1], [1.0, 0.5])
    np.testing.assert_allclose(stats.mean_outside[:, 1], [0.0, 0.5])
    assert list(stats.order()) == [0, 1] and stats.specificity[1, 1] == 0


def test_activation_maximisation_finds_a_units_preferred_input():
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 1, 3, padding=1, bias=False)
    start = torch.full((1, 2, 9, 9, 9), 0.5)
    result = maximise(nn.Sequential(conv), start, channel_objective("0", 0), name="unit", layer="0",
                      bounds=np.array([[0.0, 1.0], [0.0, 1.0]]), steps=60, learning_rate=0.1, tv=0.0, blur_sigma=0.0,
                      jitter=0)
    kernel = conv.weight.detach()[0].numpy()
    patch = result.volume[:, 3:6, 3:6, 3:6]
    np.testing.assert_array_equal(patch > 0.5, kernel > 0)   # the preferred input is the kernel's sign pattern
    assert result.value == pytest.approx(kernel[kernel > 0].sum(), rel=0.02)
    assert result.value > result.start_value and len(result.history) == 60


def test_class_maximisation_with_regularisers_raises_the_region_logit_within_the_bounds():
    network = nn.Conv3d(2, 2, 1)
    with torch.no_grad():
        network.weight.zero_()
        network.bias.zero_()
        network.weight[1, 0] = 2.0   # class 1's logit grows with sequence 0, falls with sequence 1
        network.weight[1, 1] = -1.0
    region = np.zeros((8, 8, 8), dtype=bool)
    region[2:6, 2:6, 2:6] = True
    result = maximise(network, torch.zeros(1, 2, 8, 8, 8), class_objective(1, region, 2), name="class 1",
                      bounds=np.array([[-1.0, 1.0], [-1.0, 1.0]]), steps=80, learning_rate=0.1)
    assert result.value == pytest.approx(3.0, abs=0.1) and result.start_value == 0
    inside = result.volume[:, 2:6, 2:6, 2:6]
    assert inside[0].min() > 0.9 and inside[1].max() < -0.9 and result.volume.max() <= 1.0


def test_maximise_on_the_case_returns_a_volume_on_the_case_grid(case_and_card):
    case, card = case_and_card
    done = maximise_case(case, card, class_name="edema", network=_ReadsSecondSequence(), device="cpu", steps=8,
                         start="neutral")
    assert done.volume.shape == (2,) + case.shape and done.result.value > done.result.start_value
    assert done.record()["objective"].startswith("class edema")
    with pytest.raises(ValueError, match="no class 'oedema'; choose one of background, edema, core"):
        maximise_case(case, card, class_name="oedema", network=_ReadsSecondSequence(), device="cpu")
    with pytest.raises(ValueError, match="No core is predicted"):
        maximise_case(case, card, class_name="core", network=_ReadsSecondSequence(), device="cpu")


class _Threshold(nn.Module):
    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), 10 * (x[:, 1:2] - 0.5)], 1)


@pytest.mark.parametrize("kind", ["tree", "linear"])
def test_the_surrogate_of_a_network_that_thresholds_one_sequence_is_faithful(kind):
    x = torch.rand(1, 3, 20, 20, 20, generator=torch.Generator().manual_seed(0))
    labels = _Threshold()(x)[0].argmax(0).numpy()
    features, names = voxel_features(x, ["a", "b", "c"])
    fitted = fit_surrogate(features, labels, names, ["background", "lesion"], kind=kind, depth=2, strength=1.0,
                           foreground=[1], max_samples=3000)
    assert fitted.fidelity.agreement > 0.98 and fitted.fidelity.dice["lesion"] > 0.98 and not fitted.fidelity.low
    assert fitted.fidelity.voxels == 8000 - 3000
    if kind == "tree":
        assert "b <= 0.5" in fitted.rules()
    np.testing.assert_array_equal(fitted.predict(features).shape, labels.shape)


def test_a_surrogate_of_labels_it_cannot_see_is_labelled_low_fidelity():
    rng = np.random.default_rng(0)
    x = torch.rand(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = rng.integers(0, 2, (16, 16, 16))
    features, names = voxel_features(x, ["a", "b"])
    fitted = fit_surrogate(features, labels, names, ["background", "lesion"], foreground=[1], max_samples=2000)
    assert fitted.fidelity.low and fitted.verdict.startswith("low fidelity")


def test_case_surrogate_labels_are_card_label_values_on_the_case_grid(case_and_card):
    case, card = case_and_card
    done = case_surrogate(case, card, network=_ReadsSecondSequence(), device="cpu")
    assert done.labels.shape == case.shape and set(np.unique(done.labels)) <= {0, 2, 4}
    assert done.surrogate.fidelity.agreement > 0.9
    np.testing.assert_allclose(done.affine, case.affine)


def test_first_layer_kernels_and_strongest_patches(tmp_path):
    network = create_network("UNet", UNET)
    name, kernels = first_convolution(network, 2)
    assert name == "model.0.conv.unit0.conv" and kernels.shape == (4, 2, 3, 3, 3)
    montage = kernel_montage(kernels, 1)
    assert montage.shape == (4 * 4 - 1, 3 * 4 - 1) and np.isnan(montage[3, 0])
    np.testing.assert_allclose(montage[:3, :3], kernels[0, 1, :, :, 0])
    response = np.zeros((20, 20, 20), np.float32)
    response[5, 5, 5], response[6, 6, 6], response[15, 12, 3] = 3.0, 2.0, 1.0
    image = np.random.default_rng(0).random((2, 20, 20, 20)).astype(np.float32)
    patches = strongest_patches(response, image, 0, count=2, size=6)
    assert [p.centre for p in patches] == [(5, 5, 5), (15, 12, 3)]   # (6, 6, 6) lies inside the first patch
    np.testing.assert_allclose(patches[0].image[:, 3, 3, 3], image[:, 5, 5, 5])
    assert patch_montage(patches).shape == (2 * 7 - 1, 2 * 7 - 1)
    path = save_montage(montage, tmp_path / "kernels.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no convolution module reading its 5 input sequences"):
        first_convolution(network, 5)


def test_a_slice_wise_card_gets_feature_maps_a_maximised_slice_and_a_surrogate_on_the_case_grid(tiny_case_dir, tmp_path):
    folder = tiny_case_dir(modalities=("t1", "flair"), affine=AFFINE, shape=(16, 16, 6), name="Case001")
    case = load_case(folder)
    card = load_model_card(write_card(
        tmp_path / "card2d", spatial_dims=2, slice_axis=2,
        kwargs={"spatial_dims": 2, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2],
                "num_res_units": 0},
        preprocessing={"spacing": [2.0, 2.0]}, inference={"roi_size": [16, 16]}))
    network = build_network(card, "cpu")
    result = feature_maps(case, card, "model.1.submodule.conv", network=network, device="cpu", keep=2)
    assert result.maps.shape == (2,) + case.shape and result.labels.shape == case.shape
    image, grid = preprocess(case, card)
    slices = image[0].movedim(1 + card.slice_axis, 0)   # one slice alone fits one window: compare it directly
    with recording(network, ["model.1.submodule.conv"]) as out, torch.no_grad():
        network(slices)
    direct = torch.nn.functional.interpolate(out["model.1.submodule.conv"], size=slices.shape[2:], mode="bilinear")
    np.testing.assert_allclose(result.maps[0], grid.to_case_grid(direct[:, result.channels[0]].movedim(0, 2)).numpy(),
                               atol=1e-4)
    foreground = next(c.name for c in card.classes if c.label != 0 and np.any(result.labels == card.classes.index(c)))
    done = maximise_case(case, card, class_name=foreground, network=network, device="cpu", steps=3)
    assert done.volume.shape == (2,) + case.shape and len(done.window) == 2
    assert case_surrogate(case, card, network=network, device="cpu").labels.shape == case.shape


def test_concept_relevance_flows_only_through_the_channel_the_class_reads(case_and_card):
    from napari_segxai.core.internals.concepts import case_channel_relevance

    case, card = case_and_card
    network = _ReadsSecondSequence()
    found = case_channel_relevance(case, card, "features", "edema", network=network, device="cpu")
    assert found.relevance.shape == (3,) and found.relevance[0] > 0
    assert found.relevance[1] == found.relevance[2] == 0 and found.share[0] == 1.0
    assert found.rows(1) == [{"channel": 0, "relevance": round(float(found.relevance[0]), 6), "share": 1.0}]
    unet = build_network(card, "cpu")
    labels = feature_maps(case, card, "model.0.conv", network=unet, device="cpu").labels
    present = next(c.name for k, c in enumerate(card.classes) if c.label != 0 and np.any(labels == k))
    on_unet = case_channel_relevance(case, card, "model.1.submodule.conv", present, network=unet, device="cpu")
    assert on_unet.relevance.shape == (8,) and np.isfinite(on_unet.relevance).all()
    assert _hooks(unet) == 0 and _hooks(network) == 0


def test_a_monai_bundle_gets_its_layer_tree_and_feature_maps_on_the_case_grid(tmp_path):
    from _bundle import write_bundle
    from napari_segxai.core.internals.outputs import card_layer_tree
    from napari_segxai.core.training.synth import generate_case

    card = load_model_card(write_bundle(tmp_path / "bundle"))
    network = build_network(card, "cpu")
    tree = card_layer_tree(card, network)
    assert tree[0].output_shape == (1, 4, 24, 24, 24) and "model.0.conv" in [layer.name for layer in tree]
    case = generate_case(1100, size="toy").case
    result = feature_maps(case, card, "model.0.conv", network=network, device="cpu", keep=2)
    assert result.maps.shape == (2,) + case.shape and result.n_channels == 8
    np.testing.assert_allclose(result.affine, case.affine)
