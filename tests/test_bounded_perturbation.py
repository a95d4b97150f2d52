"""Perturbations evaluated only where they can change the output: the receptive field, exactness, fallback, cost."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_segxai.core.attribution import get_method
from napari_segxai.core.attribution.cost import Speed, method_cost
from napari_segxai.core.attribution.receptive_field import held_normalisation, measure_reach
from napari_segxai.core.attribution.targets import predicted_target, region_target, voxel_target


def local_net(norm: bool = False) -> nn.Module:
    """1x1 conv, max-pool by 2, 3^3 conv at half resolution (radius 2 voxels), upsample, 1x1 conv: no global op."""
    torch.manual_seed(0)
    layers = [nn.Conv3d(2, 4, 1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(4, 4, 3, padding=1)]
    layers += [nn.InstanceNorm3d(4)] if norm else []
    layers += [nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv3d(4, 3, 1)]
    return nn.Sequential(*layers).double().eval()


class GlobalContext(nn.Module):
    """A local net whose features are shifted by their mean over the whole volume (squeeze-and-excitation-like)."""

    def __init__(self):
        super().__init__()
        self.local = local_net()

    def forward(self, x):
        y = self.local(x)
        return y + y.mean(dim=(2, 3, 4), keepdim=True)


def problem(side: int = 24, norm: bool = False):
    net = local_net(norm)
    x = torch.randn((1, 2) + (side,) * 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
    return net, x, y


def test_the_measured_receptive_field_is_the_networks():
    net, x, _ = problem()
    reach = measure_reach(net, x)
    assert reach.bounded and reach.factor == (2, 2, 2) and not reach.held
    # the pooled conv's 2 voxels, plus the pooling cell's other voxel (every phase)
    assert all(3 <= r <= 4 for r in reach.radius)


@pytest.mark.parametrize("params", [{"window": 4, "stride": 4}, {"window": 5, "stride": 3, "per_channel": False}])
@pytest.mark.parametrize("kind", ["predicted", "region", "voxel"])
def test_bounded_occlusion_equals_the_whole_evaluation_on_a_local_network(params, kind):
    net, x, y = problem()
    spatial = tuple(x.shape[2:])
    region = np.zeros(spatial, dtype=bool)
    region[4:20, 6:18, 2:22] = True
    target = {"predicted": lambda: predicted_target(y, [1, 2], output_space="probabilities"),
              "region": lambda: region_target(region, [0, 2], 3),
              "voxel": lambda: voxel_target((12, 3, 20), spatial, [1], 3)}[kind]()
    bounded = get_method("occlusion", reach_tolerance=0.0, **params)
    work = bounded.prepared(net, x).plan(tuple(x.shape[1:]), params["window"], params["stride"])
    assert work.bounded, work.reason
    whole = get_method("occlusion", bounded=False, **params).attribute(net, x, target)
    torch.testing.assert_close(bounded.attribute(net, x, target), whole, rtol=1e-9, atol=1e-9)


def test_held_normalisation_leaves_the_unperturbed_output_unchanged_and_bounds_the_reach():
    net, x, y = problem(norm=True)
    with held_normalisation(net, x) as (reference, held):
        assert held
        torch.testing.assert_close(net(x), reference)
    torch.testing.assert_close(reference, y)
    reach = measure_reach(net, x)
    assert reach.bounded and reach.held


def test_a_global_operation_falls_back_to_the_whole_input_and_says_why():
    net = GlobalContext().double().eval()
    x = torch.randn(1, 2, 24, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        target = predicted_target(net(x), [1])
    method = get_method("occlusion", window=8, stride=8, reach_tolerance=0.0)
    work = method.prepared(net, x).plan(tuple(x.shape[1:]), 8, 8)
    assert not work.bounded and "border" in work.reason
    whole = get_method("occlusion", window=8, stride=8, bounded=False).attribute(net, x, target)
    torch.testing.assert_close(method.attribute(net, x, target), whole)


def test_the_cost_estimate_counts_a_bounded_pass_as_its_share_of_the_input():
    net, x, y = problem(side=32)
    target = predicted_target(y, [1])
    shape = tuple(x.shape[1:])
    speed = Speed(0.1, 0.0, 10**6, x.numel() * 8, shape)
    whole = get_method("occlusion", window=4, stride=4, bounded=False)
    bounded = get_method("occlusion", window=4, stride=4, reach_tolerance=0.0).prepared(net, x)
    work = bounded.plan(shape, 4, 4)
    n = whole.occlusions(shape, 4, 4)
    assert work.bounded and work.share < 0.3
    assert whole.passes(shape, target).forward == 1 + n
    expected = 1 + n * work.share + work.crops_share
    assert abs(bounded.passes(shape, target).forward - expected) <= 1 + 7   # rounding and measuring the reach
    assert method_cost(bounded, speed, target).seconds < 0.5 * method_cost(whole, speed, target).seconds


def test_bounded_occlusion_reports_progress_and_stops_when_cancelled():
    from napari_segxai.core.progress import Cancelled

    net, x, y = problem(side=32)
    target = predicted_target(y, [1])
    calls = []
    method = get_method("occlusion", window=4, stride=4, reach_tolerance=0.0)
    method.attribute(net, x, target, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == calls[-1][1] and len(calls) > 2
    asked = []
    with pytest.raises(Cancelled):   # cancel at the second check: after the first batch of crops
        method.attribute(net, x, target, should_cancel=lambda: asked.append(1) or len(asked) > 1)
    assert len(asked) == 2


def test_instance_norm_falls_back_unless_its_statistics_may_be_held():
    net, x, _ = problem(norm=True)
    shape = tuple(x.shape[1:])
    default = get_method("occlusion", window=4, stride=4, reach_tolerance=0.0).prepared(net, x).plan(shape, 4, 4)
    assert not default.bounded and "hold_statistics" in default.reason
    assert get_method("occlusion", window=4, stride=4).prepared(net, x).passes(shape, None).forward == 1 + 2 * 6 ** 3
    held = get_method("occlusion", window=4, stride=4, reach_tolerance=0.0, hold_statistics=True)
    assert held.prepared(net, x).plan(shape, 4, 4).bounded


def shap_problem(length: int = 112, norm: bool = False):
    """A 2 x 14 x 14 x ``length`` input, a region across 3 cubes of 14 in the middle of the long axis: 4 cubes reach it."""
    net = local_net(norm)
    x = torch.randn(1, 2, 14, 14, length, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    region = np.zeros((14, 14, length), dtype=bool)
    region[5:9, 5:9, length // 2 - 21 : length // 2 + 21] = True
    return net, x, region_target(region, [0, 2], 3)


@pytest.mark.parametrize("kind", ["region", "voxel"])
def test_bounded_kernel_shap_equals_the_whole_evaluation_on_a_local_network(kind):
    net, x, target = shap_problem()
    if kind == "voxel":
        target = voxel_target((6, 8, 41), tuple(x.shape[2:]), [1], 3)
    params = {"cube": 14, "per_channel": False, "n_samples": 254}   # 8 cubes: every coalition, the exact values
    bounded = get_method("kernel_shap", reach_tolerance=0.0, **params)
    where = bounded.prepared(net, x).support(tuple(x.shape[1:]), target)
    assert where.bounded and where.share(x.shape[2:]) < 0.7, where
    ours = bounded.attribute(net, x, target)
    whole = get_method("kernel_shap", bounded=False, **params).attribute(net, x, target)
    torch.testing.assert_close(ours, whole, rtol=1e-5, atol=1e-7 * float(whole.abs().max()))
    null = (slice(None),) * 4 + (slice(0, where.zone[2].start // 14 * 14),)
    assert (ours[null] == 0).all() and (whole[null].abs() < 1e-6 * whole.abs().max()).all()   # null players


def test_kernel_shap_gives_features_outside_the_reach_zero_without_sampling_them():
    net, x, target = shap_problem(length=224)   # 16 cubes; the region and its radius of 3-4 meet cubes 6 to 9
    method = get_method("kernel_shap", cube=14, per_channel=False, n_samples=40, batch_size=64, reach_tolerance=0.0)
    where = method.prepared(net, x).support(tuple(x.shape[1:]), target)
    zone = where.zone[2]
    reaching = range(zone.start // 14, (zone.stop - 1) // 14 + 1)
    assert list(reaching) == [6, 7, 8, 9]
    seen = []
    hook = net.register_forward_pre_hook(lambda _m, inputs: seen.append(tuple(inputs[0].shape)))
    try:
        relevance = method.attribute(net, x, target)
    finally:
        hook.remove()
    crop = tuple(c.stop - c.start for c in where.crop)
    coalition_passes = [s for s in seen if s[2:] == crop]
    # the two ends, then all 2^4 - 2 coalitions of the 4 reaching cubes (within the 40 samples): no other cube sampled
    assert sum(s[0] for s in coalition_passes) == 2 + 14
    assert all(s[2:] in (crop, tuple(x.shape[2:])) for s in seen)   # the whole input only to measure the reach
    per_cube = relevance[..., ::14]
    outside = [k for k in range(16) if k not in reaching]
    assert (per_cube[..., outside] == 0).all()
    assert (per_cube[..., list(reaching)].abs().amax(dim=(0, 1, 2, 3)) > 0).all()


def test_kernel_shap_on_instance_norm_falls_back_to_the_whole_input_and_says_why():
    net, x, target = shap_problem(norm=True)
    params = {"cube": 14, "per_channel": False, "n_samples": 20, "reach_tolerance": 0.0}
    method = get_method("kernel_shap", **params)
    where = method.prepared(net, x).support(tuple(x.shape[1:]), target)
    assert not where.bounded and "hold_statistics" in where.reason
    assert "whole input" in where.describe(8, 8, x.shape[2:])
    torch.testing.assert_close(method.attribute(net, x, target),
                               get_method("kernel_shap", bounded=False, **params).attribute(net, x, target))
    held = get_method("kernel_shap", hold_statistics=True, **params)
    assert held.prepared(net, x).support(tuple(x.shape[1:]), target).bounded


def test_bounded_kernel_shap_reports_progress_every_batch_and_stops_when_cancelled():
    from napari_segxai.core.progress import Cancelled

    net, x, target = shap_problem(length=224)
    method = get_method("kernel_shap", cube=14, per_channel=True, n_samples=60, batch_size=8, reach_tolerance=0.0)
    calls = []
    method.attribute(net, x, target, progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert calls[-1] == (60, 60) and done[0] == 0
    assert max(b - a for a, b in zip(done, done[1:])) <= 8     # a report at least every batch of 8 coalitions
    asked = []
    with pytest.raises(Cancelled):   # cancel at the second check: after the first batch
        method.attribute(net, x, target, should_cancel=lambda: asked.append(1) or len(asked) > 1)
    assert len(asked) == 2
