"""nnU-Net's input grid and the way back to the case: (reorientation,) axis reversal, transposition, crop, resampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .preprocess import ArrayLike, _reorient, _resize, _resize_affine, as_tensor, like_input


_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def _ras_ornt(affine: np.ndarray) -> np.ndarray:
    """The ornt transform nibabel's ``as_closest_canonical`` applies (case axes -> RAS)."""
    from nibabel.orientations import io_orientation

    return io_orientation(np.asarray(affine))


def _ornt_voxel_affine(ornt: np.ndarray, shape) -> np.ndarray:
    from nibabel.orientations import inv_ornt_aff

    return inv_ornt_aff(ornt, tuple(shape))


def _inverse(ornt: np.ndarray) -> np.ndarray:
    inverse = np.zeros_like(ornt)
    for axis, (new_axis, flip) in enumerate(ornt):
        inverse[int(new_axis)] = (axis, flip)
    return inverse


@dataclass(frozen=True, eq=False)
class NnunetGrid:
    """How nnU-Net's input grid relates to the case: (reorientation,) axis reversal, transposition, crop, resampling."""

    case_shape: tuple[int, ...]
    case_affine: np.ndarray
    orientation: np.ndarray  # case axes -> the reader's axes (identity unless the reader reorients to RAS)
    reoriented_affine: np.ndarray
    properties: dict  # nnU-Net's: spacing, shape_before_cropping, bbox_used_for_cropping, ...
    transpose_forward: tuple[int, ...]
    shape: tuple[int, ...]  # the network grid

    @property
    def _cropped_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.properties["shape_after_cropping_and_before_resampling"])

    @property
    def _bbox(self) -> list[list[int]]:
        return [[int(a), int(b)] for a, b in self.properties["bbox_used_for_cropping"]]

    @property
    def _axes(self) -> list[int]:
        """Network-grid axis i is case (reoriented) axis ``_axes[i]``: reversal then transpose_forward."""
        reversed_axes = [2, 1, 0]
        return [reversed_axes[t] for t in self.transpose_forward]

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> world mm of the network grid."""
        crop = np.eye(4)
        crop[:3, 3] = [lo for lo, _ in self._bbox]
        permute = np.zeros((4, 4))
        permute[3, 3] = 1
        for i, axis in enumerate(self._axes):
            permute[axis, i] = 1
        return self.reoriented_affine @ permute @ crop @ _resize_affine(self._cropped_shape, self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def from_nnunet_order(self, array: np.ndarray) -> np.ndarray:
        """An array (..., z, y, x) in nnU-Net's original (uncropped, untransposed) order onto the case grid."""
        lead = array.ndim - 3
        array = array.transpose(*range(lead), lead + 2, lead + 1, lead)  # a view, as nnU-Net's own result is
        if np.array_equal(self.orientation, _IDENTITY_ORNT):
            return array
        return like_input(_reorient(torch.from_numpy(np.ascontiguousarray(array)), _inverse(self.orientation)), True)

    def to_case_grid(self, array: ArrayLike, *, interpolation: str = "linear") -> ArrayLike:
        """Map an array (..., *network grid) onto the case grid (zero outside nnU-Net's crop)."""
        tensor, was_numpy = as_tensor(array)
        tensor = _resize(tensor, self._cropped_shape, interpolation)
        reoriented = tuple(self.case_shape[int(i)] for i in np.argsort(self.orientation[:, 0]))
        full = torch.zeros((*tensor.shape[:-3], *[reoriented[a] for a in self._axes]), dtype=tensor.dtype,
                           device=tensor.device)
        full[(Ellipsis, *[slice(lo, hi) for lo, hi in self._bbox])] = tensor
        lead = full.ndim - 3
        order = list(range(lead)) + [lead + self._axes.index(a) for a in range(3)]
        full = full.permute(order)
        return like_input(_reorient(full, _inverse(self.orientation)).contiguous(), was_numpy)

    def to_network_grid(self, array: ArrayLike, *, interpolation: str = "nearest") -> ArrayLike:
        """Map an array (..., *case shape) onto the network grid, e.g. a painted region."""
        tensor, was_numpy = as_tensor(array)
        tensor = _reorient(tensor, self.orientation)
        lead = tensor.ndim - 3
        tensor = tensor.permute(*range(lead), *[lead + a for a in self._axes])
        tensor = tensor[(Ellipsis, *[slice(lo, hi) for lo, hi in self._bbox])].contiguous()
        return like_input(_resize(tensor, self.shape, interpolation), was_numpy)
