"""explain_case: relevance of a case through a model card, on the case's grid, aligned voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _cards import lps_affine, permuted_affine, write_card
from napari_segxai.core.attribution import available_methods, explain_case
from napari_segxai.core.case import Case
from napari_segxai.core.model.loading import load_model_card

K = 4.0


class LinearLesionNet(torch.nn.Module):
    """A 1x1 convolution: lesion logit = K (flair - 0.5), background logit = -K (flair - 0.5); flair is input 0."""

    def __init__(self, spatial_dims: int = 3):
        super().__init__()
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        self.conv = conv(2, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0], self.conv.weight[1, 0] = -K, K
            self.conv.bias.copy_(torch.tensor([K / 2, -K / 2]))

    def forward(self, x):
        return self.conv(x)


def lesion_card(tmp_path, **overrides):
    options = dict(
        kwargs={"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "channels": [4, 8], "strides": [2]},
        classes=[{"name": "background", "label": 0, "color": "#000000"},
                 {"name": "lesion", "label": 1, "color": "#ff0000"}],
        preprocessing={"normalization": "none"},
        inference={"roi_size": [8, 8, 8], "overlap": 0.5},
    )
    options.update(overrides)
    return load_model_card(write_card(tmp_path / "card", **options))


def lesion_case(affine, shape=(12, 10, 9), seed=0):
    """Case (t1, flair): flair a random 0/1 pattern, t1 noise; stored in the case's own axis order."""
    rng = np.random.default_rng(seed)
    flair = rng.integers(0, 2, shape).astype(np.float32)
    t1 = rng.normal(0.0, 1.0, shape).astype(np.float32)
    return Case(channels=np.stack([t1, flair]), modalities=("t1", "flair"), affine=affine, name="lesion")


@pytest.mark.parametrize("affine", [lps_affine((2.0, 2.0, 2.0)), 2 * permuted_affine() @ np.diag([1, 0.5, 1, 0.5])],
                         ids=["LPS", "PLS"])
def test_saliency_of_predicted_lesion_lands_on_the_lesion(tmp_path, affine):
    affine[3] = (0, 0, 0, 1)
    case = lesion_case(affine)
    before = case.channels.copy()
    card = lesion_card(tmp_path)
    result = explain_case(case, card, method="saliency", network=LinearLesionNet(), device="cpu")
    assert result.relevance.shape == (1, 2) + case.shape
    assert result.class_names == ("lesion",) and result.channel_names == ("flair", "t1")
    np.testing.assert_array_equal(result.affine, case.affine)
    lesion = case.channel("flair") > 0.5
    np.testing.assert_allclose(result.for_class("lesion")[0], K * lesion, atol=1e-5)  # windows blend to weight 1
    np.testing.assert_allclose(result.relevance[0, 1], 0.0, atol=1e-6)
    np.testing.assert_array_equal(case.channels, before)
    assert result.seconds > 0 and result.method == "saliency"
    np.testing.assert_array_equal(result.target.masks[0], lesion)  # the target, on the case grid too


def test_voxel_and_region_targets_map_through_world_coordinates(tmp_path):
    case = lesion_case(lps_affine((2.0, 2.0, 2.0)))
    card = lesion_card(tmp_path)
    net = LinearLesionNet()
    point = explain_case(case, card, target="voxel", voxel=(3, 7, 2), classes="lesion", network=net, device="cpu")
    expected = np.zeros(case.shape)
    expected[3, 7, 2] = K
    np.testing.assert_allclose(point.relevance[0, 0], expected, atol=1e-5)
    region = np.zeros(case.shape, bool)
    region[2:6, 1:4, 5:8] = True
    painted = explain_case(case, card, target="region", region=region, classes=[1], network=net, device="cpu",
                           method="gradient_x_input")
    np.testing.assert_allclose(painted.relevance[0, 0], K * region * case.channel("flair"), atol=1e-5)
    np.testing.assert_array_equal(painted.target.masks[0], region)
    assert point.target.voxel_counts == (1,) and point.target.masks[0, 3, 7, 2]


def test_non_additive_method_runs_on_a_crop_around_the_target(tmp_path):
    case = lesion_case(lps_affine((2.0, 2.0, 2.0)), shape=(20, 18, 16))
    card = lesion_card(tmp_path)
    region = np.zeros(case.shape, bool)
    region[3:6, 4:6, 2:4] = True
    result = explain_case(case, card, method="occlusion", window=1, stride=1, target="region", region=region,
                          classes="lesion", network=LinearLesionNet(), device="cpu", margin=2)
    # a per-voxel linear model: occluding a voxel drops the logit by K x its flair value, inside the region
    np.testing.assert_allclose(result.relevance[0, 0], K * region * case.channel("flair"), atol=1e-5)
    assert result.parameters["window"] == 1


def test_slice_wise_card(tmp_path):
    card = lesion_card(
        tmp_path, spatial_dims=2, slice_axis=2,
        kwargs={"spatial_dims": 2, "in_channels": 2, "out_channels": 2, "channels": [4, 8], "strides": [2]},
        preprocessing={"spacing": [2.0, 2.0], "normalization": "none"},
        inference={"roi_size": [8, 8], "overlap": 0.25},
    )
    case = lesion_case(lps_affine((2.0, 2.0, 2.0)), shape=(10, 12, 5))
    progress = []
    result = explain_case(case, card, method="integrated_gradients", steps=4, network=LinearLesionNet(2),
                          device="cpu", progress=lambda d, t: progress.append((d, t)))
    lesion = case.channel("flair") > 0.5
    # IG of a linear model from a zero baseline: K x flair on the lesion
    np.testing.assert_allclose(result.relevance[0, 0], K * lesion * case.channel("flair"), atol=1e-4)
    assert progress[-1] == (100, 100) and [d for d, _ in progress] == sorted(d for d, _ in progress)


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": "tumour"}, "no class 'tumour'"),
    ({"classes": 5}, "out of range"),
    ({"target": "region"}, "needs a region"),
    ({"target": "region", "region": np.ones((3, 3, 3), bool)}, "paint it on the case"),
    ({"target": "voxel", "voxel": (40, 0, 0)}, "outside the case"),
    ({"target": "cloud"}, "Unknown target"),
])
def test_user_mistakes(tmp_path, kwargs, message):
    case = lesion_case(lps_affine((2.0, 2.0, 2.0)))
    with pytest.raises(ValueError, match=message):
        explain_case(case, lesion_card(tmp_path), network=LinearLesionNet(), device="cpu", **kwargs)


def test_untrained_unet_card_end_to_end(tmp_path):
    card = load_model_card(write_card(tmp_path / "card"))  # tiny UNet, classes background, edema, core
    case = lesion_case(lps_affine((1.0, 1.0, 2.0)), shape=(20, 18, 9))
    case = Case(channels=case.channels, modalities=("flair", "t1"), affine=case.affine, name="unet")
    region = np.zeros(case.shape, bool)
    region[5:12, 5:12, 3:6] = True
    for method in ("saliency", "grad_cam"):
        result = explain_case(case, card, method=method, target="region", region=region, device="cpu")
        assert result.relevance.shape[0] == 2 and result.relevance.shape[2:] == case.shape
        assert np.isfinite(result.relevance).all() and np.abs(result.relevance).max() > 0
        assert result.class_names == ("edema", "core")


def test_grad_cam_and_lrp_see_inside_slice_wise_networks():
    from napari_segxai.core.attribution import SliceWise, get_method, region_target
    from napari_segxai.core.attribution.grad_cam import default_layer
    from napari_segxai.core.attribution.lrp import input_layers
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net2d = UNet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    model = SliceWise(net2d, axis=1)
    x = torch.randn(1, 2, 16, 5, 16)
    target = region_target(np.ones((16, 5, 16), bool), [1, 2], 3)
    layer = default_layer(model, x)
    assert layer.startswith("network.")
    cam = get_method("grad_cam", layer=layer).attribute(model, x, target)
    assert cam.shape == (2, 1, 16, 5, 16)
    # each slice's map is that slice's own 2D Grad-CAM
    single = get_method("grad_cam", layer=layer[len("network."):]).attribute(
        net2d, x[:, :, :, 3], region_target(np.ones((16, 16), bool), [1, 2], 3))
    torch.testing.assert_close(cam[:, :, :, 3], single, rtol=1e-4, atol=1e-5)
    assert input_layers(model, x) == ["network.model.0.residual", "network.model.0.conv.unit0.conv"]
    relevance = get_method("lrp").attribute(model, x, target)
    assert relevance.shape == (2, 2, 16, 5, 16) and torch.isfinite(relevance).all()


FEW_STEPS = {"meaningful_perturbation": {"iterations": 5}}


@pytest.mark.parametrize("method", available_methods())
def test_checking_for_cancel_inside_the_network_changes_no_relevance(tmp_path, method):
    # A cancel check after every layer (forward hooks, gradient hooks) must leave every method's result as it was.
    case, card = lesion_case(lps_affine((2.0, 2.0, 2.0))), lesion_card(tmp_path)
    results = []
    for should_cancel in (None, lambda: False):
        torch.manual_seed(0)
        results.append(explain_case(case, card, method=method, device="cpu", should_cancel=should_cancel,
                                    **FEW_STEPS.get(method, {})).relevance)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-7)
