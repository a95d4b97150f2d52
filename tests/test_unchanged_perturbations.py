"""Perturbations that change nothing (the input already holds the baseline) are skipped, exactly, on any network."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from napari_segxai.core.attribution import get_method, region_target
from napari_segxai.core.attribution.unchanged import ChangedBoxes, changed_voxels, moved_features


def instance_norm_unet(dims: int, channels: int) -> torch.nn.Module:
    """A MONAI UNet with instance norm (its statistics mix the whole input: nothing can be bounded)."""
    torch.manual_seed(0)
    return UNet(dims, channels, 3, channels=(4, 8), strides=(2,), num_res_units=1, norm="instance").eval()


class Counted(torch.nn.Module):
    """The network, counting the samples it evaluates."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.samples = network, 0

    def forward(self, x):
        self.samples += x.shape[0]
        return self.network(x)


def skull_stripped(shape, seed: int = 2) -> torch.Tensor:
    """A random input whose outer rim (a third of each side) is exactly 0 in every channel, as outside the brain."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    inside = tuple(slice(s // 3, s - s // 3) for s in shape[2:])
    brain = torch.zeros_like(x, dtype=torch.bool)
    brain[(slice(None), slice(None)) + inside] = True
    return torch.where(brain, x, torch.zeros_like(x))


def test_changed_boxes_count_the_changed_voxels_of_every_box():
    rng = np.random.default_rng(0)
    changed = torch.from_numpy(rng.random((2, 13, 9, 7)) < 0.05)
    starts = [[0, 4, 8, 10], [0, 3, 6], [0, 5]]
    stops = [[4, 8, 12, 13], [3, 6, 9], [5, 7]]
    counts = ChangedBoxes(changed).counts(starts, stops)
    assert counts.shape == (2, 4, 3, 2)
    for g, i, j, k in itertools.product(range(2), range(4), range(3), range(2)):
        box = changed[g, starts[0][i]:stops[0][i], starts[1][j]:stops[1][j], starts[2][k]:stops[2][k]]
        assert counts[g, i, j, k] == int(box.sum())


def test_changed_voxels_per_channel_or_any_channel():
    x = torch.zeros(1, 2, 4, 4)
    x[0, 1, 0, 0] = 3.0
    assert changed_voxels(x, 0.0, per_channel=True).sum(dim=(1, 2)).tolist() == [0, 1]
    assert changed_voxels(x, 0.0, per_channel=False).shape == (1, 4, 4)
    assert not changed_voxels(x, x.clone(), per_channel=True).any()   # a baseline equal to the input changes nothing
    features = torch.arange(4).repeat_interleave(4).view(1, 4, 4)      # rows as features
    assert moved_features(features, changed_voxels(x, 0.0, False), 4).tolist() == [True, False, False, False]


@pytest.mark.parametrize("per_channel", [True, False])
def test_occlusion_skips_cubes_that_hold_the_baseline_and_keeps_the_map(per_channel):
    """On an instance-norm UNet (whole evaluation), against every cube evaluated by hand: the same map, fewer passes."""
    net = Counted(instance_norm_unet(3, 2))
    x = skull_stripped((1, 2, 12, 12, 12))
    target = region_target(np.ones((12, 12, 12), bool), [1, 2], 3)
    window, stride = 4, 4
    method = get_method("occlusion", window=window, stride=stride, per_channel=per_channel, batch_size=5,
                        bounded=False)
    ours = method.attribute(net, x, target)
    samples = net.samples

    groups = [slice(c, c + 1) for c in range(2)] if per_channel else [slice(None)]
    expected = torch.zeros(len(target.classes), len(groups), 12, 12, 12)
    with torch.no_grad():
        reference = target.scalars(net.network(x))[0]
        for g, group in enumerate(groups):
            for corner in itertools.product(range(0, 12, stride), repeat=3):
                cube = tuple(slice(a, a + window) for a in corner)
                occluded = x.clone()
                occluded[(0, group) + cube] = 0.0
                drop = reference - target.scalars(net.network(occluded))[0]
                expected[(slice(None), g) + cube] = drop.view(-1, 1, 1, 1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))

    cubes = len(groups) * 27
    changing = len(groups) * 1   # only the centre cube (4:8 on every axis) holds brain
    assert samples == 1 + changing < 1 + cubes   # the reference pass and the changing cubes
    # the estimate, once prepared on the input, counts the same
    prepared = method.prepared(net, x)
    assert prepared.occlusions(tuple(x.shape[1:]), window, stride) == changing
    assert prepared.passes(tuple(x.shape[1:]), target).forward == 1 + changing
    assert method.occlusions(tuple(x.shape[1:]), window, stride) == cubes   # not prepared: every cube


def test_occlusion_of_an_input_that_is_all_baseline_runs_no_pass():
    net = Counted(instance_norm_unet(2, 1))
    x = torch.zeros(1, 1, 8, 8)
    target = region_target(np.ones((8, 8), bool), [1], 3)
    relevance = get_method("occlusion", window=4, stride=4, bounded=False).attribute(net, x, target)
    assert net.samples == 0 and not relevance.any()   # not even the unperturbed pass
