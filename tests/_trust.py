"""Test helpers for the trust measures: tiny networks and problems whose answers are known (not product code)."""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import UNet
from scipy import ndimage

from napari_segxai.core.attribution import AttributionMethod, predicted_target, region_target
from napari_segxai.core.trust import Problem


class PerVoxelLinear(torch.nn.Module):
    """A 1x1 convolution without bias: class k's logit at a voxel is sum_c w[k, c] x_c there."""

    def __init__(self, weights, spatial_dims: int = 3):
        super().__init__()
        weights = torch.as_tensor(weights, dtype=torch.float32)
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        self.conv = conv(weights.shape[1], weights.shape[0], 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(weights.view(*weights.shape, *([1] * spatial_dims)))

    def forward(self, x):
        return self.conv(x)


class SobelOfInput(AttributionMethod):
    """A deliberately broken 'method': the Sobel edge magnitude of the input, whatever the network (never registered)."""

    name = "sobel_of_input"
    signed = False

    def _attribute(self, network, inputs, target, progress, should_cancel):
        array = inputs[0].double().cpu().numpy()
        edges = np.stack([np.sqrt(sum(ndimage.sobel(ch, axis=a) ** 2 for a in range(ch.ndim))) for ch in array])
        return torch.from_numpy(np.broadcast_to(edges, (len(target.classes),) + edges.shape).copy()).float()


class InputItself(AttributionMethod):
    """A deliberately broken 'method': the input itself as the map of every class, whatever the network (never registered)."""

    name = "input_itself"
    signed = True

    def _attribute(self, network, inputs, target, progress, should_cancel):
        return inputs[0].detach().expand(len(target.classes), *inputs.shape[1:]).clone()


def unet_problem(shape=(16, 16, 16), channels=2, seed=0) -> Problem:
    """A tiny random MONAI UNet (3 classes), a random input and the predicted regions of classes 1 and 2."""
    torch.manual_seed(seed)
    net = UNet(len(shape), channels, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(1, channels, *shape)
    with torch.no_grad():
        target = predicted_target(net(x), [1, 2])
    return Problem(net, x, target, ("one", "two"), tuple(f"ch{i}" for i in range(channels)))


def linear_problem(shape=(16, 16, 16), seed=0, positive=True) -> Problem:
    """A per-voxel linear model (2 channels, 2 classes) explaining class 1 over a cube."""
    rng = np.random.default_rng(seed)
    weights = [[0.0, 0.0], [1.5, 0.5]]
    net = PerVoxelLinear(weights, len(shape)).eval()
    values = rng.uniform(0.1, 1.0, (1, 2) + shape) if positive else rng.normal(0, 1, (1, 2) + shape)
    x = torch.tensor(values, dtype=torch.float32)
    region = np.zeros(shape, bool)
    region[tuple(slice(s // 4, 3 * s // 4) for s in shape)] = True
    target = region_target(region, [1], 2)
    return Problem(net, x, target, ("lesion",), ("a", "b"))
