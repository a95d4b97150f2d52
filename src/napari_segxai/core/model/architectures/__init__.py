"""The registry of network architectures a model card can name in its ``architecture`` field.

Each family is one module of this package (:mod:`.monai_nets` today) that registers its
constructors with :func:`register` and, when its blocks add a residual branch to their input,
the forwards that route that addition through LRP's sum layer with :func:`register_residual_blocks`
(the way zennit keeps its torchvision canonizers apart). Adding a family is one such file,
imported at the end of this module.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from ..lone_copy import prefer_onednn

ArchitectureFn = Callable[..., torch.nn.Module]

#: Card name -> constructor taking the card's ``kwargs``.
ARCHITECTURES: Dict[str, ArchitectureFn] = {}

#: Loaders of {block class: LRP-ready forward}, one per family (see :func:`register_residual_blocks`).
_RESIDUAL_BLOCKS: List[Callable[[], dict]] = []

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


def register_residual_blocks(loader: Callable[[], dict]) -> Callable[[], dict]:
    """Add a family's residual blocks: ``loader()`` returns {block class: forward}.

    Each forward replaces the block's own for LRP and must add its branches as
    ``self.canonizer_sum(torch.stack([branch, skip], dim=-1))``; the LRP method gives the block
    that ``canonizer_sum`` layer (else both branches would get all the relevance). The loader
    imports the family's package, so a family that is not installed costs nothing.
    """
    _RESIDUAL_BLOCKS.append(loader)
    return loader


def residual_block_forwards() -> dict:
    """{block class: LRP-ready forward} of every registered family that is installed."""
    forwards: dict = {}
    for loader in _RESIDUAL_BLOCKS:
        try:
            forwards.update(loader())
        except ImportError:
            continue
    return forwards


def known_architectures() -> list[str]:
    """Every name a card's ``architecture`` field accepts."""
    return sorted(ARCHITECTURES) + [TORCHSCRIPT]


def create_network(name: str, kwargs: dict, *, source: str = "the model card") -> torch.nn.Module:
    """Construct the registered architecture ``name`` with ``kwargs``; errors name the card field.

    Its convolutions run a lone CPU input on oneDNN (:func:`..lone_copy.prefer_onednn`).
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"{source}: field 'architecture' is {name!r}, which is not a known architecture; "
            f"use one of {', '.join(known_architectures())}."
        )
    try:
        network = ARCHITECTURES[name](**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError) as err:
        raise ValueError(
            f"{source}: field 'kwargs' does not build a {name}: {err}; fix the keyword arguments."
        ) from err
    return prefer_onednn(network)


from . import monai_nets  # noqa: E402,F401  (registers the MONAI family)
from . import nnunet_nets  # noqa: E402,F401  (registers the nnU-Net family)
