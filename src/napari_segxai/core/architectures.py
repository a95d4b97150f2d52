"""The registry of network architectures a model card can name in its ``architecture`` field."""

from __future__ import annotations

from typing import Callable, Dict

import torch

ArchitectureFn = Callable[..., torch.nn.Module]

#: Card name -> constructor taking the card's ``kwargs``.
ARCHITECTURES: Dict[str, ArchitectureFn] = {}

#: The pseudo-architecture of a card whose weights file is a whole TorchScript network.
TORCHSCRIPT = "torchscript"


def register(name: str) -> Callable[[ArchitectureFn], ArchitectureFn]:
    """Add a constructor to :data:`ARCHITECTURES` under ``name``."""

    def add(constructor: ArchitectureFn) -> ArchitectureFn:
        if name in ARCHITECTURES or name == TORCHSCRIPT:
            raise ValueError(f"Architecture {name!r} is already registered.")
        ARCHITECTURES[name] = constructor
        return constructor

    return add


def _monai_network(class_name: str) -> ArchitectureFn:
    """A constructor that imports ``monai.networks.nets.<class_name>`` when first called."""

    def construct(**kwargs) -> torch.nn.Module:
        from monai.networks import nets

        return getattr(nets, class_name)(**kwargs)

    construct.__name__ = class_name
    construct.__doc__ = f"monai.networks.nets.{class_name}"
    return construct


# MONAI networks that return one tensor (B, out_channels, *spatial) in eval mode.
for _name in (
    "UNet", "BasicUNet", "AttentionUnet", "SegResNet", "SegResNetDS", "DynUNet",
    "UNETR", "SwinUNETR", "VNet", "HighResNet",
):
    register(_name)(_monai_network(_name))


def known_architectures() -> list[str]:
    """Every name a card's ``architecture`` field accepts."""
    return sorted(ARCHITECTURES) + [TORCHSCRIPT]


def create_network(name: str, kwargs: dict, *, source: str = "the model card") -> torch.nn.Module:
    """Construct the registered architecture ``name`` with ``kwargs``; errors name the card field."""
    if name not in ARCHITECTURES:
        raise ValueError(
            f"{source}: field 'architecture' is {name!r}, which is not a known architecture; "
            f"use one of {', '.join(known_architectures())}."
        )
    try:
        return ARCHITECTURES[name](**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as err:
        raise ValueError(
            f"{source}: field 'kwargs' does not build a {name}: {err}; fix the keyword arguments."
        ) from err
