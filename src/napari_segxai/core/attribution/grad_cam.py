"""Grad-CAM on any layer, for any number of spatial dimensions: Selvaraju et al. 2017, arXiv:1610.02391."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import progress as _progress
from ._hooks import forward_with_hooks
from .base import AttributionMethod, Parameter, register
from .slicewise import SliceWise

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def spatial_layers(network: torch.nn.Module, inputs: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Named modules whose output is a feature map (1, F, *spatial), with that shape, in the order they finish.

    Skip connections (modules that concatenate a stored feature map with their submodule's) are
    left out: their output is a concatenation of two layers, not a layer of features.
    """
    ndim, batch = _feature_map_layout(network, inputs)
    found: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in network.named_modules():
        if not name or type(module).__name__ == "SkipConnection" or isinstance(module, SliceWise):
            continue

        def hook(_module, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and output.ndim == ndim and output.shape[0] == batch:
                found.append((name, tuple(output.shape)))

        handles.append(module.register_forward_hook(hook))
    forward_with_hooks(network, inputs, handles)
    return found


def _feature_map_layout(network: torch.nn.Module, inputs: torch.Tensor) -> tuple[int, int]:
    """Dimensions and batch size of a layer's feature map: (1, F, *spatial), or per slice for a slice-wise network."""
    if isinstance(network, SliceWise):
        return inputs.ndim - 1, int(inputs.shape[2 + network.axis])
    return inputs.ndim, 1


def default_layer(network: torch.nn.Module, inputs: torch.Tensor) -> str:
    """The last module to finish among those with the coarsest feature map (the bottleneck)."""
    layers = spatial_layers(network, inputs)
    if not layers:
        raise ValueError("The network has no layer with a spatial feature map; Grad-CAM needs one.")
    smallest = min(int(torch.tensor(shape[2:]).prod()) for _, shape in layers)
    return [name for name, shape in layers if int(torch.tensor(shape[2:]).prod()) == smallest][-1]


def upsample(maps: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """Resize maps (N, 1, *spatial) to ``size`` by linear (MONAI's default upsampler) or nearest interpolation."""
    if mode == "linear":
        return F.interpolate(maps, size=size, mode=_LINEAR_MODES[len(size)], align_corners=False)
    return F.interpolate(maps, size=size, mode="nearest")


@register("grad_cam")
class GradCAM(AttributionMethod):
    """Layer activations weighted by their spatially averaged gradient, summed, rectified, upsampled."""

    gradient_based = False  # gradients w.r.t. a layer, not the input: not a SmoothGrad base
    backpropagates = True
    parameters = {
        "layer": Parameter("", "name of the module (as in named_modules); empty: the bottleneck"),
        "relu": Parameter(True, "keep only positive evidence (as in the paper)"),
        "interpolation": Parameter("linear", "upsampling of the layer map to the input grid",
                                   choices=("linear", "nearest")),
    }
    zero_reason = ("the gradient-weighted sum of its layer's channels is negative everywhere, and Grad-CAM keeps "
                   "only positive evidence (relu=False shows the negative part)")

    def _validate(self) -> None:
        self.signed = not self.params["relu"]

    @property
    def channel_resolved(self) -> bool:
        return False

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        name = self.params["layer"] or default_layer(network, inputs)
        modules = dict(network.named_modules())
        if name not in modules or not name:
            raise ValueError(f"grad_cam: the network has no layer {name!r}; pass a name from named_modules().")
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)

        handle = modules[name].register_forward_hook(hook)
        try:
            with torch.enable_grad():
                x = inputs.detach().requires_grad_(True)
                scalars = target.scalars(network(x))
        finally:
            handle.remove()
        if len(captured) != 1 or not isinstance(captured[0], torch.Tensor):
            raise ValueError(f"grad_cam: layer {name!r} must run exactly once and return one tensor; choose another layer.")
        activation = captured[0]
        if (activation.ndim, activation.shape[0]) != _feature_map_layout(network, inputs):
            raise ValueError(f"grad_cam: layer {name!r} has no spatial feature map {tuple(activation.shape)}; choose a convolutional layer.")
        n = len(target.classes)
        maps = []
        for k in range(n):
            _progress.step(k, n, progress, should_cancel)
            (grad,) = torch.autograd.grad(scalars[0, k], activation, retain_graph=k < n - 1, allow_unused=True)
            if grad is None:
                raise ValueError(f"grad_cam: the output does not depend on layer {name!r}; choose a layer on the path to the output.")
            weights = grad.flatten(2).mean(2).view(*grad.shape[:2], *([1] * (grad.ndim - 2)))
            cam = (weights * activation).sum(1, keepdim=True)
            maps.append(F.relu(cam) if self.params["relu"] else cam)
        _progress.step(n, n, progress, None)
        maps = torch.cat(maps).detach()
        if not isinstance(network, SliceWise):
            return upsample(maps, tuple(inputs.shape[2:]), self.params["interpolation"])
        # per slice (S * n, 1, *plane'): each slice's own Grad-CAM, upsampled in its plane, stacked along the slice axis
        axis = network.axis
        plane = tuple(s for i, s in enumerate(inputs.shape[2:]) if i != axis)
        slices = upsample(maps, plane, self.params["interpolation"]).view(n, -1, *plane)
        return slices.unsqueeze(1).movedim(2, 2 + axis)
