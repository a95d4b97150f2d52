"""Attribution engine: registry, targets, result type, and every registered method on 2D and 3D nets."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from napari_segxai.core import progress as core_progress
from napari_segxai.core.attribution import (
    Relevance,
    Target,
    available_methods,
    explain,
    get_method,
    method_class,
    predicted_target,
    region_target,
    voxel_target,
)

# Cheap settings so every method runs in well under a second on 16^3.
FAST = {
    "smoothgrad": {"n_samples": 3},
    "integrated_gradients": {"steps": 4},
    "occlusion": {"window": 8, "stride": 8},
    "kernel_shap": {"n_samples": 40},
    "meaningful_perturbation": {"iterations": 3},
}

# (spatial dims, input channels, output classes, side)
NETS = {"3d-4in-4out": (3, 4, 4, 16), "2d-2in-3out": (2, 2, 3, 16), "3d-1in-2out": (3, 1, 2, 16)}


def tiny_unet(dims: int, in_channels: int, out_channels: int) -> torch.nn.Module:
    """A two-level MONAI UNet with channels (4, 8) in eval mode, fixed weights."""
    torch.manual_seed(0)
    return UNet(dims, in_channels, out_channels, channels=(4, 8), strides=(2,), num_res_units=1).eval()


@pytest.fixture(scope="module", params=list(NETS))
def case(request):
    """A tiny network, an input and a region target over every non-background class."""
    dims, cin, cout, side = NETS[request.param]
    net = tiny_unet(dims, cin, cout)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((1, cin) + (side,) * dims, generator=generator)
    region = np.zeros((side,) * dims, dtype=bool)
    region[(slice(4, 11),) * dims] = True
    target = region_target(region, list(range(1, cout)), cout)
    return net, x, target


#: The methods the README and docs/attribution.md promise, pinned: a method that drops out of the
#: registry (a failed import, a lost decorator) fails here instead of vanishing from the widget and the tests.
PROMISED_METHODS = (
    "saliency", "gradient_x_input", "smoothgrad", "integrated_gradients", "grad_cam", "occlusion",
    "guided_backprop", "deconvolution", "deeplift", "lrp", "meaningful_perturbation", "kernel_shap",
    "modality_shapley",
)


def test_registry_holds_the_methods():
    names = available_methods()
    assert sorted(names) == sorted(PROMISED_METHODS)
    for name in PROMISED_METHODS:
        assert method_class(name).name == name
        assert get_method(name).params == {k: p.default for k, p in method_class(name).parameters.items()}


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="saliency.*occlusion"):
        get_method("lrp-epsilon-magic")


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("saliency", {"steps": 3}, "no parameter 'steps'"),
        ("integrated_gradients", {"steps": 0}, "at least 1"),
        ("integrated_gradients", {"steps": 2.5}, "whole number"),
        ("integrated_gradients", {"baseline": "noise"}, "choose one of"),
        ("smoothgrad", {"base": "occlusion"}, "not a gradient method"),
        ("occlusion", {"window": 4, "stride": 6}, "lower the stride"),
        ("grad_cam", {"relu": "yes"}, "true or false"),
    ],
)
def test_bad_parameters_raise_one_sentence(name, params, message):
    with pytest.raises(ValueError, match=message):
        get_method(name, **params)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_gives_finite_float32_maps(case, name):
    net, x, target = case
    before = x.clone()
    result = explain(net, x, target, name, **FAST.get(name, {}))
    method = get_method(name, **FAST.get(name, {}))
    channels = x.shape[1] if method.channel_resolved else 1
    assert isinstance(result, Relevance)
    assert result.relevance.shape == (len(target.classes), channels) + tuple(x.shape[2:])
    assert result.relevance.dtype == np.float32
    assert np.isfinite(result.relevance).all()
    assert np.abs(result.relevance).max() > 0
    assert result.class_indices == target.classes
    assert result.method == name and result.parameters == method.params
    assert result.signed == method.signed and result.seconds > 0
    assert len(result.channel_names) == channels
    torch.testing.assert_close(x, before, rtol=0, atol=0)
    assert not x.requires_grad
    assert all(p.requires_grad for p in net.parameters())
    assert not net.training


@pytest.mark.parametrize("name", available_methods())
def test_classes_together_equal_classes_one_by_one(case, name):
    net, x, target = case
    method = get_method(name, **FAST.get(name, {}))
    together = method.attribute(net, x, target)
    alone = torch.cat([method.attribute(net, x, target.subset(k)) for k in range(len(target.classes))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6 * float(alone.abs().max()))


@pytest.mark.parametrize("name", available_methods())
def test_cancel_stops_the_method(case, name):
    net, x, target = case
    calls = []

    def cancel():
        calls.append(1)
        return True

    with pytest.raises(core_progress.Cancelled):
        get_method(name, **FAST.get(name, {})).attribute(net, x, target, should_cancel=cancel)
    assert calls


@pytest.mark.parametrize("name", available_methods())
def test_progress_is_reported_to_the_end(case, name):
    net, x, target = case
    seen: list[tuple[int, int]] = []
    get_method(name, **FAST.get(name, {})).attribute(net, x, target, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_explain_names_classes_and_channels():
    net = tiny_unet(3, 2, 3)
    x = torch.randn(1, 2, 16, 16, 16)
    target = voxel_target((8, 8, 8), (16, 16, 16), [2, 1], 3)
    result = explain(net, x, target, "saliency", class_names=("background", "edema", "core"),
                     channel_names=("t1", "flair"), affine=np.eye(4))
    assert result.class_names == ("core", "edema")
    assert result.channel_names == ("t1", "flair")
    np.testing.assert_array_equal(result.for_class("edema"), result.relevance[1])
    np.testing.assert_array_equal(result.for_class(2), result.relevance[0])
    assert "voxel (8, 8, 8)" in result.target_description
    with pytest.raises(ValueError, match="was not explained"):
        result.for_class("background")
    with pytest.raises(ValueError, match="3 channel names for 2 input channels"):
        explain(net, x, target, "saliency", channel_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="2 class names"):
        explain(net, x, target, "saliency", class_names=("background", "edema"))


def test_input_shape_is_checked():
    net = tiny_unet(3, 2, 3)
    target = voxel_target((1, 1, 1), (16, 16, 16), 1, 3)
    with pytest.raises(ValueError, match=r"\(1, C, \*spatial\)"):
        get_method("saliency").attribute(net, torch.randn(2, 2, 16, 16, 16), target)
    with pytest.raises(ValueError, match="spatial shape"):
        get_method("saliency").attribute(net, torch.randn(1, 2, 8, 16, 16), target)


# ---- targets ---------------------------------------------------------------------------------


def test_predicted_target_is_the_argmax_region():
    logits = torch.randn(1, 4, 6, 7, 5, generator=torch.Generator().manual_seed(3))
    target = predicted_target(logits, [1, 3])
    argmax = logits[0].argmax(0).numpy()
    np.testing.assert_array_equal(target.masks[0], argmax == 1)
    np.testing.assert_array_equal(target.masks[1], argmax == 3)
    assert target.kind == "predicted" and target.threshold is None and target.output == "logits"
    expected = torch.stack([(logits[0, c] * torch.as_tensor(argmax == c)).sum() for c in (1, 3)])
    torch.testing.assert_close(target.scalars(logits)[0], expected)


def test_confident_target_keeps_voxels_above_threshold():
    logits = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 3
    probabilities = torch.softmax(logits, 1)[0].numpy()
    target = predicted_target(logits, 2, confident=True, threshold=0.7)
    expected = (probabilities.argmax(0) == 2) & (probabilities[2] > 0.7)
    np.testing.assert_array_equal(target.masks[0], expected)
    assert target.threshold == 0.7 and "p > 0.7" in target.describe()
    assert expected.sum() < (probabilities.argmax(0) == 2).sum()


def test_sigmoid_target_and_probability_output():
    logits = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    target = predicted_target(logits, [0, 2], activation="sigmoid", output_space="probabilities")
    probabilities = torch.sigmoid(logits)[0]
    np.testing.assert_array_equal(target.masks[1], (probabilities[2] > 0.5).numpy())
    expected = (probabilities[2] * torch.tensor(target.masks[1])).sum()
    torch.testing.assert_close(target.scalars(logits)[0, 1], expected)
    softmax_target = Target("region", (1,), np.ones((1, 8, 8), bool), output="probabilities")
    torch.testing.assert_close(softmax_target.scalars(logits)[0, 0], torch.softmax(logits, 1)[0, 1].sum())


def test_region_and_voxel_targets():
    region = np.zeros((5, 6, 7), dtype=np.uint8)
    region[1:3, 2:4, 3:5] = 7
    target = region_target(region, [0, 1], 2)
    assert target.masks.shape == (2, 5, 6, 7) and target.voxel_counts == (8, 8)
    point = voxel_target((4, 0, 6), (5, 6, 7), 1, 2)
    assert point.voxel_counts == (1,) and point.masks[0, 4, 0, 6]
    with pytest.raises(ValueError, match="outside the volume"):
        voxel_target((5, 0, 0), (5, 6, 7), 1, 2)


def test_target_masks_are_private_copies():
    masks = np.ones((1, 4, 4), dtype=bool)
    target = Target("region", (0,), masks)
    masks[0, 0, 0] = False
    assert target.masks.all() and not target.masks.flags.writeable


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: predicted_target(torch.zeros(1, 2, 4, 4), 5), "out of range"),
        (lambda: predicted_target(torch.zeros(2, 2, 4, 4), 1), r"\(1, K, \*spatial\)"),
        (lambda: region_target(np.zeros((4, 4), bool), 1, 2), "empty"),
        (lambda: predicted_target(torch.zeros(1, 2, 4, 4), 1, confident=True, threshold=1.5), r"\[0, 1\)"),
        (lambda: Target("cloud", (0,), np.ones((1, 2), bool)), "Unknown target kind"),
        (lambda: Target("region", (0,), np.ones((1, 2), bool), output="softmax"), "Unknown output space"),
        (lambda: Target("region", (0, 1), np.ones((1, 2), bool)), "one mask per class"),
    ],
)
def test_bad_targets_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_target_checks_the_network_output():
    target = region_target(np.ones((4, 4), bool), 1, 2)
    with pytest.raises(ValueError, match="spatial shape"):
        target.scalars(torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="out of range"):
        Target("region", (3,), np.ones((1, 4, 4), bool)).scalars(torch.zeros(1, 2, 4, 4))


def test_core_attribution_imports_no_gui():
    code = (
        "import sys, napari_segxai.core.attribution\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'PyQt5', 'PyQt6', 'qtpy', 'magicgui')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- batching under the memory cap ------------------------------------------------------------


def test_batch_size_follows_the_memory_cap(monkeypatch):
    from napari_segxai.core.attribution import base, batching

    net = tiny_unet(3, 2, 3)
    x = torch.randn(1, 2, 16, 16, 16)
    assert base.samples_per_batch(net, x, 10, requested=3) == 3
    assert base.samples_per_batch(net, x, 10, requested=30) == 10
    assert 1 <= base.samples_per_batch(net, x, 10) <= 10
    activations = base.activation_bytes(net, x)
    monkeypatch.setattr(batching, "CPU_BATCH_CAP", activations + 4 * 2 * activations + 1)
    assert base.samples_per_batch(net, x, 10) == 4
    assert base.samples_per_batch(net, x, 10, with_gradients=False) == 9
    maps = 3 * x.numel() * x.element_size()
    monkeypatch.setattr(batching, "CPU_BATCH_CAP", activations + 2 * (2 * activations + maps) + 1)
    assert base.samples_per_batch(net, x, 10, maps_per_sample=3) == 2
    # with gradients never below two copies on CPU while one copy's activations fit the cap ...
    monkeypatch.setattr(batching, "CPU_BATCH_CAP", activations)
    assert base.samples_per_batch(net, x, 10) == batching.CPU_FEWEST_COPIES == 2
    monkeypatch.setattr(batching, "CPU_BATCH_CAP", activations - 1)   # ... beyond it one copy runs faster
    assert base.samples_per_batch(net, x, 10) == 1
    monkeypatch.setattr(batching, "CPU_BATCH_CAP", 1)
    assert base.samples_per_batch(net, x, 10, with_gradients=False) == 1   # a lone forward pass runs on oneDNN
    assert base.samples_per_batch(net, x, 1) == 1
    monkeypatch.setattr(batching, "available_memory", lambda _device: 2 * (activations + 2 * activations))
    assert base.samples_per_batch(net, x, 10) == 1   # what the memory cannot hold, the floor does not force


@pytest.mark.parametrize("name, params", [
    ("integrated_gradients", {"steps": 5}),
    ("smoothgrad", {"n_samples": 4}),
    ("occlusion", {"window": 8, "stride": 4}),
    ("kernel_shap", {"cube": 8, "n_samples": 40}),
])
def test_results_do_not_depend_on_the_batch_size(case, name, params):
    net, x, target = case
    one = get_method(name, batch_size=1, **params).attribute(net, x, target)
    many = get_method(name, batch_size=3, **params).attribute(net, x, target)
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5 * float(one.abs().max()))


def test_weighted_target_scalars():
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2] = True
    weights = np.full((1, 4, 4), 0.5, np.float32)
    weights[0, 0] = 2.0
    target = Target("region", (1,), masks, weights=weights)
    output = torch.arange(32, dtype=torch.float32).view(1, 2, 4, 4)
    expected = 2.0 * output[0, 1, 0].sum() + 0.5 * output[0, 1, 1].sum()
    torch.testing.assert_close(target.scalars(output)[0, 0], expected)
    assert target.subset(0).weights is not None
    with pytest.raises(ValueError, match="weights must have the masks' shape"):
        Target("region", (1,), masks, weights=np.ones((4, 4)))


@pytest.mark.parametrize("name", ["guided_backprop", "deconvolution", "grad_cam"])
def test_a_map_that_the_rule_leaves_empty_is_said_so(name):
    """A class that a rectified feature drives only negatively: guided, deconvolution and Grad-CAM (positive part)
    give a zero map, and the result says so in one sentence; saliency's map of the same class is not zero."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(2, 2, 1)).eval()
    with torch.no_grad():
        net[0].bias.fill_(0.5)                      # the features are active somewhere
        net[2].weight.copy_(torch.tensor([1.0, 1.0, -1.0, -1.0]).reshape(2, 2, 1, 1, 1))  # class 1 only against them
        net[2].bias.zero_()
    x = torch.randn((1, 1, 8, 8, 8), generator=torch.Generator().manual_seed(3))
    region = np.zeros((8, 8, 8), dtype=bool)
    region[2:6, 2:6, 2:6] = True
    target = region_target(region, [0, 1], 2)
    params = {"layer": "1"} if name == "grad_cam" else {}
    result = explain(net, x, target, name, class_names=["tissue", "lesion"], **params)
    assert result.zero_classes == ("lesion",) and np.any(result.for_class("tissue"))
    assert result.zero_line().startswith(f"The {name} map of lesion is zero everywhere: ")
    assert method_class(name).zero_reason in result.zero_line()
    assert np.any(explain(net, x, target, "saliency").for_class(1)) and not explain(net, x, target, "saliency").zero_classes
