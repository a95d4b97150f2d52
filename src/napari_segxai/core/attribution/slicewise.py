"""A slice-wise (2D) segmentation network seen as a volume network, so every method explains it in 3D."""

from __future__ import annotations

import torch


class SliceWise(torch.nn.Module):
    """A 2D network applied to every slice of a volume along one axis: (B, C, X, Y, Z) -> (B, K, X, Y, Z)."""

    def __init__(self, network: torch.nn.Module, axis: int) -> None:
        super().__init__()
        self.network = network
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = x.movedim(2 + self.axis, 1)                      # (B, S, C, a, b)
        batch, n_slices = stacked.shape[:2]
        out = self.network(stacked.reshape(batch * n_slices, *stacked.shape[2:]))
        return out.reshape(batch, n_slices, *out.shape[1:]).movedim(1, 2 + self.axis)
