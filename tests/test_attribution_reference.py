"""Attribution methods against references: captum on the same scalar target, and hand-checkable models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import (
    DeepLift,
    Deconvolution,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from monai.networks.nets import UNet

from napari_segxai.core.attribution import get_method, predicted_target, region_target
from napari_segxai.core.attribution.integrated_gradients import make_baseline
from napari_segxai.core.attribution.meaningful_perturbation import LinearUpsampler


def tiny_unet(dims: int, in_channels: int, out_channels: int) -> torch.nn.Module:
    """A two-level MONAI UNet with channels (4, 8) in eval mode, fixed weights."""
    torch.manual_seed(0)
    return UNet(dims, in_channels, out_channels, channels=(4, 8), strides=(2,), num_res_units=1).eval()


@pytest.fixture(scope="module", params=["3d", "2d"])
def case(request):
    """A tiny network, an input with every channel spanning [-2, 2], and a predicted-region target."""
    dims, cin, cout = (3, 4, 4) if request.param == "3d" else (2, 3, 3)
    net = tiny_unet(dims, cin, cout)
    x = torch.randn((1, cin) + (16,) * dims, generator=torch.Generator().manual_seed(2)).clamp(-2, 2)
    flat = x.view(1, cin, -1)
    flat[:, :, 0], flat[:, :, 1] = -2.0, 2.0  # equal channel ranges: one captum stdev fits all
    with torch.no_grad():
        logits = net(x)
    present = [c for c in range(cout) if (logits[0].argmax(0) == c).any()]
    assert len(present) >= 2
    return net, x, predicted_target(logits, present)


def scalar_of_class(net, target, k):
    """captum forward function: the k-th target scalar per sample, shape (B,)."""
    single = target.subset(k)
    return lambda z: single.scalars(net(z))[:, 0]


def close(ours: torch.Tensor, reference: torch.Tensor, rtol: float = 1e-4) -> None:
    """Tight agreement, absolute tolerance scaled to the map's magnitude."""
    reference = reference.detach()
    torch.testing.assert_close(ours, reference, rtol=rtol, atol=rtol * float(reference.abs().max()))


def per_class(net, target, make, **kwargs):
    """A captum method run once per target class, stacked to (K_t, C, *spatial)."""
    return torch.cat([make(scalar_of_class(net, target, k)).attribute(**kwargs)
                      for k in range(len(target.classes))])


def test_saliency_matches_captum(case):
    net, x, target = case
    ours = get_method("saliency").attribute(net, x, target)
    ref = per_class(net, target, Saliency, inputs=x.clone().requires_grad_(), abs=False)
    close(ours, ref)


def test_gradient_x_input_matches_captum(case):
    net, x, target = case
    ours = get_method("gradient_x_input").attribute(net, x, target)
    close(ours, per_class(net, target, InputXGradient, inputs=x.clone().requires_grad_()))


@pytest.mark.parametrize("base, captum_base", [("saliency", Saliency), ("gradient_x_input", InputXGradient)])
def test_smoothgrad_matches_captum_noise_tunnel(case, base, captum_base):
    net, x, target = case
    n, sigma, seed = 4, 0.1, 7
    ours = get_method("smoothgrad", base=base, n_samples=n, sigma=sigma, seed=seed, batch_size=n).attribute(net, x, target)
    refs = []
    for k in range(len(target.classes)):
        torch.manual_seed(seed)  # captum draws its noise from the global generator
        tunnel = NoiseTunnel(captum_base(scalar_of_class(net, target, k)))
        kwargs = {"abs": False} if captum_base is Saliency else {}
        refs.append(tunnel.attribute(x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=n, stdevs=sigma * 4.0, **kwargs))
    close(ours, torch.cat(refs))


def test_smoothgrad_noise_batches_do_not_change_the_mean(case):
    net, x, target = case
    one = get_method("smoothgrad", n_samples=6, batch_size=6).attribute(net, x, target)
    two = get_method("smoothgrad", n_samples=6, batch_size=4).attribute(net, x, target)
    odd = get_method("smoothgrad", n_samples=6, batch_size=1).attribute(net, x, target)
    # the noise comes from the seed, not from how the copies are batched: the same mean every time
    close(two, one, rtol=1e-4)
    close(odd, one, rtol=1e-4)
    noiseless = get_method("saliency").attribute(net, x, target)
    other_seed = get_method("smoothgrad", n_samples=6, batch_size=6, seed=1).attribute(net, x, target)
    assert not torch.allclose(one, noiseless) and not torch.allclose(one, other_seed)  # the noise is there
    squared = get_method("smoothgrad", n_samples=6, batch_size=6, variant="smoothgrad_sq").attribute(net, x, target)
    variance = get_method("smoothgrad", n_samples=6, batch_size=6, variant="vargrad").attribute(net, x, target)
    close(variance, squared - one * one, rtol=1e-4)


@pytest.mark.parametrize("baseline", ["zeros", "minimum", "blurred"])
@pytest.mark.parametrize("quadrature", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_match_captum(case, baseline, quadrature):
    net, x, target = case
    steps = 6
    ours = get_method("integrated_gradients", steps=steps, baseline=baseline, quadrature=quadrature,
                      batch_size=4, blur_sigma=2.0, path_warp=1.0).attribute(net, x, target)
    ref = per_class(net, target, IntegratedGradients, inputs=x.clone().requires_grad_(),
                    baselines=make_baseline(x, baseline, 2.0), n_steps=steps, method=quadrature,
                    internal_batch_size=4)
    close(ours, ref)


def test_baselines():
    x = torch.randn(1, 2, 9, 9, 9)
    torch.testing.assert_close(make_baseline(x, "minimum")[0, 1], torch.full((9, 9, 9), float(x[0, 1].min())))
    blurred = make_baseline(x, "blurred", 3.0)
    assert blurred.std() < x.std() / 3 and blurred.shape == x.shape
    torch.testing.assert_close(make_baseline(x, "blurred", 0.0), x)


@pytest.mark.parametrize("norm", ["instance", "batch"])
@pytest.mark.parametrize("baseline", ["zeros", "minimum", "blurred"])
def test_integrated_gradients_completeness(baseline, norm):
    """Sum of the attributions = S(x) - S(baseline) within 1%, also on scale-invariant (instance-norm) nets."""
    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1, norm=norm).eval()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = net(x)
    target = predicted_target(logits, [c for c in range(3) if (logits[0].argmax(0) == c).any()])
    ours = get_method("integrated_gradients", steps=64, baseline=baseline).attribute(net, x, target)
    with torch.no_grad():
        difference = target.scalars(net(x))[0] - target.scalars(net(make_baseline(x, baseline, 5.0)))[0]
    assert difference.abs().min() > 1.0
    torch.testing.assert_close(ours.flatten(1).sum(1), difference, rtol=0.01, atol=0.0)


def test_unwarped_path_misses_the_jump_of_instance_norm_nets():
    """Why path_warp exists: from zeros, evenly spread nodes lose a large part of S(x) - S(0)."""
    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16,) * 3, bool), [1, 2], 3)
    with torch.no_grad():
        difference = target.scalars(net(x))[0] - target.scalars(net(torch.zeros_like(x)))[0]
    even = get_method("integrated_gradients", steps=32, path_warp=1.0).attribute(net, x, target).flatten(1).sum(1)
    warped = get_method("integrated_gradients", steps=32).attribute(net, x, target).flatten(1).sum(1)
    even_error = ((even - difference).abs() / difference.abs())
    warped_error = ((warped - difference).abs() / difference.abs())
    assert even_error.min() > 0.2
    assert warped_error.max() < 0.05


def test_grad_cam_matches_captum_layer_grad_cam(case):
    net, x, target = case
    layer = "model.1.submodule"  # the bottom of the two-level UNet
    ours = get_method("grad_cam", layer=layer).attribute(net, x, target)
    module = dict(net.named_modules())[layer]
    refs = []
    for k in range(len(target.classes)):
        cam = LayerGradCam(scalar_of_class(net, target, k), module).attribute(x.clone().requires_grad_(), relu_attributions=True)
        mode = "trilinear" if x.ndim == 5 else "bilinear"
        refs.append(LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=mode))
    close(ours, torch.cat(refs))


def test_grad_cam_default_layer_is_the_bottleneck(case):
    net, x, target = case
    from napari_segxai.core.attribution.grad_cam import default_layer

    assert default_layer(net, x) == "model.1.submodule"
    with pytest.raises(ValueError, match="no layer 'nope'"):
        get_method("grad_cam", layer="nope").attribute(net, x, target)


@pytest.mark.parametrize("per_channel", [True, False])
def test_occlusion_matches_captum(case, per_channel):
    net, x, target = case
    window, stride = 6, 5  # the last cube is cut by the border, as in captum
    ours = get_method("occlusion", window=window, stride=stride, baseline=0.5, per_channel=per_channel,
                      batch_size=7).attribute(net, x, target)
    channels = 1 if per_channel else x.shape[1]
    spatial = x.ndim - 2
    ref = per_class(net, target, Occlusion, inputs=x.clone().requires_grad_(), sliding_window_shapes=(channels,) + (window,) * spatial,
                    strides=(1,) + (stride,) * spatial, baselines=0.5, perturbations_per_eval=7)
    close(ours, ref if per_channel else ref[:, :1])
    if not per_channel:
        close(ref[:, 1:], ref[:, :1].expand_as(ref[:, 1:]))


@pytest.mark.parametrize("name, captum_method", [("guided_backprop", GuidedBackprop), ("deconvolution", Deconvolution)])
@pytest.mark.parametrize("act", ["relu", ("relu", {"inplace": True})])
def test_rectified_backprop_matches_captum_on_relu_nets(name, captum_method, act):
    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1, act=act).eval()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16,) * 3, bool), [1, 2], 3)
    inplace = [getattr(m, "inplace", None) for m in net.modules()]
    ours = get_method(name).attribute(net, x, target)
    assert [getattr(m, "inplace", None) for m in net.modules()] == inplace
    with pytest.warns(UserWarning):  # captum announces its ReLU hooks
        ref = torch.cat([captum_method(_Scalars(net, target)).attribute(x.clone().requires_grad_(), target=k)
                         for k in range(2)])
    close(ours, ref)
    assert not torch.allclose(ours, get_method("saliency").attribute(net, x, target))


@pytest.mark.parametrize("name, captum_method", [("guided_backprop", GuidedBackprop), ("deconvolution", Deconvolution)])
def test_rectified_backprop_rewrites_prelu_where_captum_does_not(case, name, captum_method):
    """MONAI's default PReLU: captum hooks only nn.ReLU and silently returns the plain gradient."""
    net, x, target = case
    saliency = get_method("saliency").attribute(net, x, target)
    with pytest.warns(UserWarning):
        captum = captum_method(_Scalars(net, target)).attribute(x.clone().requires_grad_(), target=0)
    close(captum, saliency[:1])
    ours = get_method(name).attribute(net, x, target)
    assert (ours - saliency).abs().max() > 0.1 * saliency.abs().max()


class _Scalars(torch.nn.Module):
    """captum model: the network followed by the target's aggregation, (B, K_t)."""

    def __init__(self, net, target):
        super().__init__()
        self.net, self.target = net, target

    def forward(self, z):
        return self.target.scalars(self.net(z))


@pytest.mark.parametrize("act", ["relu", "prelu"])
@pytest.mark.parametrize("baseline", ["zeros", "blurred"])
def test_deeplift_sums_to_delta_on_batch_norm_nets(act, baseline):
    """Summation-to-delta: exact for PReLU too, because the Rescale rule is given to PReLU."""
    from captum.attr._core import deep_lift as captum_deep_lift

    table = dict(captum_deep_lift.SUPPORTED_NON_LINEAR)
    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1, act=act, norm="batch").eval()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16,) * 3, bool), [0, 1, 2], 3)
    ours = get_method("deeplift", baseline=baseline).attribute(net, x, target)
    with torch.no_grad():
        difference = target.scalars(net(x))[0] - target.scalars(net(make_baseline(x, baseline, 5.0)))[0]
    torch.testing.assert_close(ours.flatten(1).sum(1), difference, rtol=1e-3, atol=1e-3)
    assert captum_deep_lift.SUPPORTED_NON_LINEAR == table


def test_deeplift_matches_captum_on_relu_nets(case):
    _, x, target = case
    torch.manual_seed(0)
    dims = x.ndim - 2
    n_classes = x.shape[1]  # the fixture's nets have as many classes as channels
    net = UNet(dims, x.shape[1], n_classes, channels=(4, 8), strides=(2,), num_res_units=1,
               act="relu", norm="batch").eval()
    ours = get_method("deeplift").attribute(net, x, target)
    with pytest.warns(UserWarning):
        ref = torch.cat([DeepLift(_Scalars(net, target)).attribute(x.clone().requires_grad_(), baselines=0.0, target=k)
                         for k in range(len(target.classes))])
    close(ours, ref)


def brute_force_shapley(net, x, target, features, baseline):
    """Exact Shapley values (K_t, m) of the feature groups by the subset formula."""
    import itertools
    import math

    m = int(features.max()) + 1

    def value(subset):
        keep = torch.zeros(m)
        keep[list(subset)] = 1.0
        kept = keep[features].unsqueeze(0)
        with torch.no_grad():
            return target.scalars(net(baseline + kept * (x - baseline)))[0].double()

    values = {s: value(s) for r in range(m + 1) for s in itertools.combinations(range(m), r)}
    phi = torch.zeros(len(target.classes), m, dtype=torch.float64)
    for i in range(m):
        for subset, v in values.items():
            if i not in subset:
                w = math.factorial(len(subset)) * math.factorial(m - len(subset) - 1) / math.factorial(m)
                phi[:, i] += w * (values[tuple(sorted(subset + (i,)))] - v)
    return phi


def per_feature(relevance, features):
    """Sum of a relevance map (K_t, G, *spatial) over each feature group: (K_t, m)."""
    m = int(features.max()) + 1
    return torch.stack([relevance[:, features == j].sum(1) for j in range(m)], dim=1).double()


@pytest.mark.parametrize("baseline", ["zeros", "minimum"])
def test_kernel_shap_enumerated_equals_exact_shapley(baseline):
    from napari_segxai.core.attribution.kernel_shap import cube_features

    torch.manual_seed(0)
    net = UNet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(1, 2, 16, 12, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16, 12), bool), [1, 2], 3)
    features = cube_features((16, 12), 8, 2)  # 2 x 2 cubes per channel: 8 features, 254 coalitions
    exact = brute_force_shapley(net, x, target, features, make_baseline(x, baseline))
    enumerated = get_method("kernel_shap", cube=8, n_samples=254, baseline=baseline).attribute(net, x, target)
    close(per_feature(enumerated, features), exact, rtol=1e-5)
    # cube values are spread evenly: constant inside a cube
    assert torch.allclose(enumerated[:, 0, :8, :8], enumerated[:, 0, :1, :1].expand(-1, 8, 8))
    sampled = get_method("kernel_shap", cube=8, n_samples=200, seed=3, baseline=baseline).attribute(net, x, target)
    error = (per_feature(sampled, features) - exact).abs().max() / exact.abs().max()
    assert error < 0.1
    torch.testing.assert_close(per_feature(sampled, features).sum(1), exact.sum(1), rtol=1e-4, atol=1e-3)


def test_kernel_shap_gives_features_that_hold_the_baseline_zero_and_the_others_their_shapley_values():
    """Instance-norm UNet: features wholly outside the 'brain' are null players; the rest are exact with fewer coalitions."""
    from napari_segxai.core.attribution.kernel_shap import cube_features

    torch.manual_seed(0)
    network = UNet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1, norm="instance").eval()
    calls = []
    network.register_forward_pre_hook(lambda _module, inputs: calls.append(inputs[0].shape[0]))
    x = torch.randn(1, 2, 16, 12, generator=torch.Generator().manual_seed(2))
    x[:, :, 8:, :] = 0.0                                   # the lower half holds the baseline in both channels
    target = region_target(np.ones((16, 12), bool), [1, 2], 3)
    features = cube_features((16, 12), 6, 1)               # 3 x 2 cubes shared by the channels; 4 of 6 change
    exact = brute_force_shapley(network, x, target, features, torch.zeros_like(x))
    method = get_method("kernel_shap", cube=6, per_channel=False, n_samples=200, bounded=False,
                        batch_size=8)
    calls.clear()
    values = per_feature(method.attribute(network, x, target), features)
    torch.testing.assert_close(values, exact, rtol=1e-5, atol=1e-6 * float(exact.abs().max()))
    moved = [j for j in range(6) if x[0][:, (features[0] == j)].any()]
    assert moved == [0, 1, 2, 3] and not values[:, 4:].any()   # cubes starting at row 12 are all zero
    assert sum(calls) == 2 + 2**4 - 2     # the two ends, then every coalition of the 4 changing features
    assert method.prepared(network, x).n_features(tuple(x.shape[1:]), 6) == 4


def test_kernel_shap_agrees_with_captum_kernel_shap_on_a_feature_mask():
    from napari_segxai.core.attribution.kernel_shap import cube_features

    torch.manual_seed(0)
    net = UNet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(1, 2, 16, 12, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16, 12), bool), [1, 2], 3)
    features = cube_features((16, 12), 8, 1)  # 2 x 2 cubes shared by both channels: 4 features, 14 coalitions
    ours = per_feature(get_method("kernel_shap", cube=8, per_channel=False).attribute(net, x, target), features)
    mask = features.expand(2, -1, -1).unsqueeze(0)  # captum's feature_mask, shaped like the input
    refs = []
    for k in range(len(target.classes)):
        torch.manual_seed(k)  # captum samples coalitions from the global generator
        explainer = KernelShap(scalar_of_class(net, target, k))
        refs.append(explainer.attribute(x, baselines=0.0, feature_mask=mask, n_samples=2000,
                                        perturbations_per_eval=500, return_input_shape=False)[0])
    reference = torch.stack(refs).double()
    # ours enumerates every coalition (exact); captum samples them: agreement within its sampling error
    assert (ours - reference).abs().max() < 0.05 * reference.abs().max()  # measured 0.014
    torch.testing.assert_close(ours.sum(1), reference.sum(1), rtol=1e-3, atol=1e-3)  # both S(x) - S(baseline)


def test_sampled_kernel_shap_is_captums_regression_on_the_same_coalitions():
    """Sampled (not enumerated): handed our coalitions and kernel weights, captum's KernelShap finds our values."""
    from napari_segxai.core.attribution.kernel_shap import coalitions, cube_features

    torch.manual_seed(0)
    net = UNet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(1, 2, 16, 12, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16, 12), bool), [1], 3)
    features = cube_features((16, 12), 4, 1)  # 4 x 3 cubes shared by both channels: 12 features
    m, n = 12, 100                           # 100 of 4094 coalitions: sizes 1 and 11 enumerated, the rest drawn
    ours = per_feature(get_method("kernel_shap", cube=4, per_channel=False, n_samples=n).attribute(net, x, target),
                       features)[0]
    rows, weights = coalitions(m, n, torch.Generator().manual_seed(0))   # the method's own draw (seed 0)
    by_size = {int(r.sum()): float(w / weights.max()) for r, w in zip(rows, weights)}

    class Given(KernelShap):
        def kernel_shap_perturb_generator(self, original_inp, **kwargs):
            yield torch.ones(1, m, dtype=torch.long)
            yield torch.zeros(1, m, dtype=torch.long)
            yield from (row.long().unsqueeze(0) for row in rows)

        def kernel_shap_similarity_kernel(self, _, __, sample, **kwargs):
            size = int(sample.sum())
            return torch.tensor([self.inf_weight if size in (0, m) else by_size[size]])

    with torch.no_grad():
        theirs = Given(scalar_of_class(net, target, 0)).attribute(
            x, baselines=0.0, feature_mask=features.expand(2, -1, -1).unsqueeze(0), n_samples=n + 2,
            perturbations_per_eval=50, return_input_shape=False)[0].double()
    sizes = rows.sum(1)
    assert all(torch.allclose(weights[sizes == t], weights[sizes == t][0]) for t in by_size)   # one weight per size
    assert torch.allclose(theirs, ours, rtol=1e-3, atol=1e-4 * float(theirs.abs().max())), (ours, theirs)


def test_kernel_shap_needs_more_samples_than_features():
    net = tiny_unet(3, 2, 3)
    target = region_target(np.ones((16,) * 3, bool), 1, 3)
    with pytest.raises(ValueError, match="raise n_samples"):
        get_method("kernel_shap", cube=4, n_samples=20).attribute(net, torch.randn(1, 2, 16, 16, 16), target)


# ---- hand-checkable: a per-voxel linear model y_k(v) = sum_c W[k, c] x_c(v) + b_k ----------


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 4, kernel_size=1)).eval()
    x = torch.randn(1, 3, 8, 8, 8)
    region = np.zeros((8, 8, 8), bool)
    region[2:6, 1:5, 3:7] = True
    target = region_target(region, [1, 3], 4)
    weights = net[0].weight.detach()[:, :, 0, 0, 0]
    mask = torch.as_tensor(region, dtype=torch.float32)
    expected_gradient = torch.stack([weights[c].view(3, 1, 1, 1) * mask for c in (1, 3)])
    return net, x, target, expected_gradient


def test_linear_model_gradient_methods(linear):
    net, x, target, gradient = linear
    close(get_method("saliency").attribute(net, x, target), gradient)
    close(get_method("gradient_x_input").attribute(net, x, target), gradient * x)
    # SmoothGrad of a linear model is its gradient whatever the noise
    close(get_method("smoothgrad", n_samples=3, sigma=0.5).attribute(net, x, target), gradient)
    for quadrature in ("gausslegendre", "riemann_left"):
        ig = get_method("integrated_gradients", steps=3, quadrature=quadrature, path_warp=1.0).attribute(net, x, target)
        close(ig, gradient * x)


def test_linear_model_occlusion_is_weight_times_input(linear):
    net, x, target, gradient = linear
    ours = get_method("occlusion", window=1, stride=1, baseline=0.0).attribute(net, x, target)
    close(ours, gradient * x)


def test_linear_model_kernel_shap_is_weight_times_input_per_cube(linear):
    from napari_segxai.core.attribution.kernel_shap import cube_features

    net, x, target, gradient = linear
    ours = get_method("kernel_shap", cube=4, n_samples=64, seed=1).attribute(net, x, target)  # 24 features, sampled
    features = cube_features((8, 8, 8), 4, 3)
    expected = per_feature(gradient * x, features)
    close(per_feature(ours, features), expected, rtol=1e-4)
    sizes = torch.bincount(features.flatten()).double()
    close(ours.double(), (expected / sizes)[:, features], rtol=1e-4)


class _OneChannelEvidence(torch.nn.Module):
    """Class 1 logit = 4 x channel 0 at each voxel, class 0 logit = 0: only channel 0 carries class 1."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x[:, :1]), 4 * x[:, :1]], 1)


@pytest.mark.parametrize("deletion", ["zeros", "minimum"])
def test_meaningful_perturbation_deletes_exactly_the_evidence(deletion):
    x = torch.ones(1, 2, 12, 12, 12)
    x.view(1, 2, -1)[:, :, 0] = -1.0  # gives the minimum deletion a value below the input
    region = np.zeros((12,) * 3, bool)
    region[3:9, 3:9, 3:9] = True
    target = region_target(region, 1, 2)
    ours = get_method("meaningful_perturbation", deletion=deletion, mask_scale=1, iterations=60).attribute(
        _OneChannelEvidence(), x, target)
    inside = torch.as_tensor(region)
    assert ours[0, 0][inside].mean() > 0.9       # channel 0 in the region had to go
    assert ours[0, 0][~inside].mean() < 0.1      # nothing else did
    assert ours[0, 1].max() < 0.05


def test_linear_model_grad_cam(linear):
    net, x, target, gradient = linear
    ours = get_method("grad_cam", layer="0", relu=False).attribute(net, x, target)
    mask = torch.tensor(target.masks[0], dtype=torch.float32)
    with torch.no_grad():
        y = net(x)[0]
    expected = torch.stack([(mask.mean() * y[c]).unsqueeze(0) for c in (1, 3)])
    close(ours, expected)


def test_meaningful_perturbation_deletions():
    x = torch.randn(1, 2, 10, 10, 10, generator=torch.Generator().manual_seed(4)) * torch.tensor([1.0, 5.0]).view(1, 2, 1, 1, 1)
    method = get_method("meaningful_perturbation", deletion="noise", seed=3)
    noise = method.deleted(x)
    torch.testing.assert_close(noise, method.deleted(x))
    assert not torch.allclose(noise, get_method("meaningful_perturbation", deletion="noise", seed=4).deleted(x))
    torch.testing.assert_close(noise.std(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), rtol=0.1, atol=0.0)
    torch.testing.assert_close(get_method("meaningful_perturbation", deletion="blurred", blur_sigma=2.0).deleted(x),
                               make_baseline(x, "blurred", 2.0))


@pytest.mark.parametrize("coarse, size", [((5,), (17,)), ((3, 4), (12, 9)), ((3, 4, 5), (10, 16, 5))])
def test_meaningful_perturbation_mask_upsampling_is_torch_linear_interpolation(coarse, size):
    mask = torch.rand((2, 3) + coarse, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ours = LinearUpsampler(coarse, size, mask)(mask)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    torch_ = torch.nn.functional.interpolate(mask, size=size, mode=mode, align_corners=False)
    torch.testing.assert_close(ours, torch_)
    weights = torch.rand_like(torch_)
    ours_grad, = torch.autograd.grad((ours * weights).sum(), mask)
    torch_grad, = torch.autograd.grad((torch_ * weights).sum(), mask)
    torch.testing.assert_close(ours_grad, torch_grad)


# ---- LRP (zennit) -------------------------------------------------------------------------------


def _lrp_unet():
    torch.manual_seed(0)
    return UNet(3, 2, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=2).eval()


def test_lrp_normalised_start_equals_explicit_per_voxel_maps():
    """sum over region voxels a of M_a / sum(M_a), with each M_a from its own LRP pass."""
    from napari_segxai.core.attribution.lrp import lrp_context, make_composite

    net = _lrp_unet()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    region = np.zeros((16,) * 3, bool)
    region[7, 5:9, 6] = True
    target = region_target(region, [1, 2], 3)
    ours = get_method("lrp").attribute(net, x, target)
    composite = make_composite(net, x, "epsilon_plus_flat", 1e-6, 0.25, False)
    explicit = torch.zeros_like(ours)
    with lrp_context(net, composite) as modified:
        xr = x.clone().requires_grad_(True)
        out = modified(xr)
        for k, c in enumerate(target.classes):
            for voxel in np.argwhere(region):
                start = torch.zeros_like(out)
                start[(0, c) + tuple(voxel)] = 1.0
                (single,) = torch.autograd.grad(out, xr, start, retain_graph=True)
                explicit[k] += single[0] / single.sum()
    close(ours, explicit, rtol=1e-4)
    torch.testing.assert_close(ours.flatten(1).sum(1), torch.full((2,), 4.0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"])
def test_lrp_conserves_relevance_on_monai_unet(composite):
    """With biases left out of the rules, the input relevance sums to the starting logits (norm pass + residual Sum canonizer)."""
    net = _lrp_unet()
    x = torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    region = np.zeros((16,) * 3, bool)
    region[4:12, 4:12, 4:12] = True
    target = region_target(region, [1, 2], 3)
    ours = get_method("lrp", composite=composite, start="logit", zero_bias=True).attribute(net, x, target)
    with torch.no_grad():
        started = target.scalars(net(x))[0]
    torch.testing.assert_close(ours.flatten(1).sum(1), started, rtol=0.03, atol=0.0)


def test_lrp_leaves_the_network_as_it_was():
    net = _lrp_unet()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    target = region_target(np.ones((16,) * 3, bool), 1, 3)
    get_method("lrp").attribute(net, x, target)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert not any(hasattr(m, "canonizer_sum") or m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                   for m in net.modules())
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="explains logits"):
        get_method("lrp").attribute(net, x, region_target(np.ones((16,) * 3, bool), 1, 3, output_space="probabilities"))


def test_supervoxels_follow_edges_and_feed_kernel_shap():
    from napari_segxai.core.attribution.kernel_shap import supervoxel_features
    from napari_segxai.core.attribution.supervoxels import slic

    image = torch.zeros(2, 20, 20, 12)
    image[:, :, :, 7:] = 3.0  # an edge that the seed grid (spacing 8) does not follow
    image += 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    labels = slic(image, 8, compactness=1.0)
    assert labels.shape == (20, 20, 12) and labels.min() == 0
    assert torch.equal(labels.unique(), torch.arange(int(labels.max()) + 1))
    for label in labels.unique():
        inside = labels == label
        assert not (inside[:, :, :7].any() and inside[:, :, 7:].any())
    # compactness high: the grid wins over the edge
    stiff = slic(image, 8, compactness=50.0)
    assert any(((stiff == l)[:, :, :7].any() and (stiff == l)[:, :, 7:].any()) for l in stiff.unique())
    # Kernel SHAP over them: efficiency holds, the map is constant on each supervoxel
    net = tiny_unet(3, 2, 3)
    x = image.unsqueeze(0)
    target = region_target(np.ones((20, 20, 12), bool), [1, 2], 3)
    ours = get_method("kernel_shap", features="supervoxels", cube=8, n_samples=64).attribute(net, x, target)
    features = supervoxel_features(x, 8, 2, 1.0)
    with torch.no_grad():
        difference = target.scalars(net(x))[0] - target.scalars(net(torch.zeros_like(x)))[0]
    torch.testing.assert_close(ours.flatten(1).sum(1), difference, rtol=1e-4, atol=1e-3)
    for j in features.unique()[:5]:
        values = ours[0][features == j]
        assert torch.allclose(values, values[0].expand_as(values))


def test_supervoxels_report_progress_and_hear_cancel():
    """SLIC reports after every neighbouring cell of every iteration and stops when asked; Kernel SHAP over
    supervoxels keeps one bar: SLIC on its first tenth, then the masked inputs, never going back."""
    from napari_segxai.core.attribution.kernel_shap import SLIC_SHARE
    from napari_segxai.core.attribution.supervoxels import slic
    from napari_segxai.core.progress import Cancelled

    image = torch.randn(2, 12, 12, 8, generator=torch.Generator().manual_seed(0))
    calls = []
    slic(image, 4, iterations=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 81) for i in range(81)] + [(81, 81)]   # 3 iterations x 27 neighbouring cells
    asked = []
    with pytest.raises(Cancelled):
        slic(image, 4, iterations=3, should_cancel=lambda: len(asked) > 10 or asked.append(1))
    assert len(asked) == 11
    net = tiny_unet(3, 2, 3)
    target = region_target(np.ones((12, 12, 8), bool), [1, 2], 3)
    bar = []
    get_method("kernel_shap", features="supervoxels", cube=4, n_samples=64).attribute(
        net, image.unsqueeze(0), target, progress=lambda done, total: bar.append(done / total))
    slic_part = [v for v in bar if v <= SLIC_SHARE]
    assert len(slic_part) >= 10 and bar == sorted(bar) and bar[-1] == 1.0
