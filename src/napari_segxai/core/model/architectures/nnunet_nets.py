"""nnU-Net v2 networks (``dynamic_network_architectures``, built from an nnU-Net plans file) and their residual blocks.

A card derived from an nnU-Net model folder names the architecture ``nnunet``; its ``kwargs`` are the
plans' ``architecture`` entry (``network_class_name``, ``arch_kwargs``, ``arch_kwargs_req_import``)
plus the channel counts, and nnU-Net's own ``get_network_from_plans`` builds the network without deep
supervision (the full-resolution head only, as nnU-Net predicts).
"""

from __future__ import annotations

import contextlib
import io

import torch

from . import register, register_residual_blocks


@register("nnunet")
def nnunet_network(*, network_class_name: str, arch_kwargs: dict, arch_kwargs_req_import, input_channels: int,
                   output_channels: int) -> torch.nn.Module:
    """nnU-Net's network from its plans (deep supervision off, nnU-Net's initialisation)."""
    with contextlib.redirect_stdout(io.StringIO()):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        return get_network_from_plans(network_class_name, dict(arch_kwargs), list(arch_kwargs_req_import),
                                      input_channels, output_channels, allow_init=True, deep_supervision=False)


def _basic_block_forward(self, x):
    """dynamic_network_architectures BasicBlockD (residual encoders): two convs plus the skip, then the non-linearity."""
    residual = self.skip(x)
    out = self.conv2(self.conv1(x))
    if self.apply_stochastic_depth:
        out = self.drop_path(out)
    if self.apply_se:
        out = self.squeeze_excitation(out)
    return self.nonlin2(self.canonizer_sum(torch.stack([out, residual], dim=-1)))


def _bottleneck_forward(self, x):
    """dynamic_network_architectures BottleneckD: three convs plus the skip, then the non-linearity."""
    residual = self.skip(x)
    out = self.conv3(self.conv2(self.conv1(x)))
    if self.apply_stochastic_depth:
        out = self.drop_path(out)
    if self.apply_se:
        out = self.squeeze_excitation(out)
    return self.nonlin3(self.canonizer_sum(torch.stack([out, residual], dim=-1)))


@register_residual_blocks
def residual_blocks() -> dict:
    """dynamic_network_architectures' residual blocks and their LRP-ready forwards."""
    from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD

    return {BasicBlockD: _basic_block_forward, BottleneckD: _bottleneck_forward}
