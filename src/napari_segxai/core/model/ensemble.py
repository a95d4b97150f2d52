"""A model of several members (nnU-Net's folds) as one network, and its members."""

from __future__ import annotations

from typing import Sequence

import torch


class FoldEnsemble(torch.nn.Module):
    """The members of a model (nnU-Net's folds): its output is the mean of theirs, as nnU-Net ensembles logits.

    Explanations and predictions run the members one after another (:attr:`members`) and average
    the results, so activations and gradients are held for one member at a time.
    """

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for network in self.members:
            output = network(x)
            total = output if total is None else total + output
        return total / len(self.members)


def ensemble_members(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The networks of ``network``: the members of a :class:`FoldEnsemble`, else the network itself."""
    return list(network.members) if isinstance(network, FoldEnsemble) else [network]
