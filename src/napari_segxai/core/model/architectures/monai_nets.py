"""MONAI networks (``monai.networks.nets``) and the residual blocks whose sums LRP must split."""

from __future__ import annotations

import torch

from . import ArchitectureFn, register, register_residual_blocks

#: MONAI networks that return one tensor (B, out_channels, *spatial) in eval mode.
NETWORKS = (
    "UNet", "BasicUNet", "AttentionUnet", "SegResNet", "SegResNetDS", "DynUNet",
    "UNETR", "SwinUNETR", "VNet", "HighResNet",
)


def _monai_network(class_name: str) -> ArchitectureFn:
    """A constructor that imports ``monai.networks.nets.<class_name>`` when first called."""

    def construct(**kwargs) -> torch.nn.Module:
        from monai.networks import nets

        return getattr(nets, class_name)(**kwargs)

    construct.__name__ = class_name
    construct.__doc__ = f"monai.networks.nets.{class_name}"
    return construct


for _name in NETWORKS:
    register(_name)(_monai_network(_name))


def _residual_unit_forward(self, x):
    """MONAI ResidualUnit: conv path + residual path, summed through LRP's sum layer."""
    return self.canonizer_sum(torch.stack([self.conv(x), self.residual(x)], dim=-1))


def _segresnet_block_forward(self, x):
    """MONAI SegResNet ResBlock with its skip addition through LRP's sum layer."""
    y = self.conv1(self.act(self.norm1(x)))
    y = self.conv2(self.act(self.norm2(y)))
    return self.canonizer_sum(torch.stack([y, x], dim=-1))


def _dynunet_block_forward(self, inp):
    """MONAI DynUNet UnetResBlock with its skip addition through LRP's sum layer."""
    out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(inp)))))
    residual = inp
    if hasattr(self, "conv3"):
        residual = self.conv3(residual)
    if hasattr(self, "norm3"):
        residual = self.norm3(residual)
    return self.lrelu(self.canonizer_sum(torch.stack([out, residual], dim=-1)))


@register_residual_blocks
def residual_blocks() -> dict:
    """MONAI's residual blocks and their LRP-ready forwards."""
    from monai.networks.blocks import ResidualUnit
    from monai.networks.blocks.dynunet_block import UnetResBlock
    from monai.networks.blocks.segresnet_block import ResBlock

    return {ResidualUnit: _residual_unit_forward, ResBlock: _segresnet_block_forward,
            UnetResBlock: _dynunet_block_forward}
