"""A case as the network's input: the card's channels, orientation, voxel size and normalisation, and the way back."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..memory import refuse_if_too_large
from .card import ModelCard

if TYPE_CHECKING:
    from ...case import Case


ArrayLike = Union[np.ndarray, torch.Tensor]


#: Relative difference below which a voxel size counts as equal to the card's.
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True, eq=False)
class NetworkGrid:
    """How the network's input grid relates to the case grid: reorientation, then resampling."""

    case_shape: tuple[int, ...]
    case_affine: np.ndarray
    orientation: np.ndarray  # nibabel ornt transform: case axes -> network axes (permute/flip)
    reoriented_shape: tuple[int, ...]
    shape: tuple[int, ...]  # the network grid
    affine: np.ndarray  # voxel -> world mm of the network grid
    resampled: bool

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm of the network grid."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def shape_in_case_axes(self) -> tuple[int, ...]:
        """The network grid's shape with its axes in the case's order (before reorientation)."""
        return tuple(self.shape[int(new_axis)] for new_axis, _ in self.orientation)

    def to_case_grid(self, array: ArrayLike, *, interpolation: str = "linear") -> ArrayLike:
        """Map an array (..., *network grid) onto the case grid (..., *case shape); linear or nearest."""
        # Flips and axis swaps commute with voxel-centre resizing, so reorient the small grid first.
        tensor, was_numpy = as_tensor(array)
        tensor = _reorient(tensor, _inverse_ornt(self.orientation))
        tensor = _resize(tensor, self.case_shape, interpolation) if self.resampled else tensor
        return like_input(tensor, was_numpy)

    def to_network_grid(self, array: ArrayLike, *, interpolation: str = "nearest") -> ArrayLike:
        """Map an array (..., *case shape) onto the network grid (..., *network grid), e.g. a painted region."""
        tensor, was_numpy = as_tensor(array)
        tensor = _resize(tensor, self.shape_in_case_axes, interpolation) if self.resampled else tensor
        tensor = _reorient(tensor, self.orientation)
        return like_input(tensor, was_numpy)


def network_grid(case: Case, card: ModelCard) -> NetworkGrid:
    """The :class:`NetworkGrid` of ``case`` for ``card`` (from the case's shape and affine; no voxel is read)."""
    case_shape = case.shape
    if len(case_shape) != 3:
        raise ValueError(f"Case {case.name} has {len(case_shape)} spatial axes; segmentation needs a 3D volume.")
    case_affine = np.asarray(case.affine, dtype=np.float64)
    ornt = _orientation_transform(case_affine, card.orientation)
    reoriented_shape = tuple(case_shape[int(i)] for i in np.argsort(ornt[:, 0]))
    affine = case_affine @ _ornt_affine(ornt, case_shape)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    shape = _target_shape(case, card, reoriented_shape, spacing)
    resampled = shape != reoriented_shape
    if resampled:
        affine = affine @ _resize_affine(reoriented_shape, shape)
    return NetworkGrid(
        case_shape=case_shape, case_affine=case_affine, orientation=ornt,
        reoriented_shape=reoriented_shape, shape=shape, affine=affine, resampled=resampled,
    )


def refuse_if_too_large_to_segment(case: Case, card: ModelCard, device: torch.device) -> None:
    """Refuse a case whose segmentation would not fit in ``device``'s free memory, before allocating it."""
    shape = network_grid(case, card).shape if card.source is None else case.shape  # nnU-Net: about the case's
    voxels = max(math.prod(shape), math.prod(case.shape))
    n_classes = len(card.classes)
    # the network input, the window sums and weights, logits -> probabilities -> case grid, the labels
    needed = 4 * voxels * (len(card.modalities) + 3 * n_classes + 2)
    refuse_if_too_large(
        needed, f"Segmenting case {case.name} ({' x '.join(map(str, case.shape))} voxels, {n_classes} classes) "
        f"on {device}", "crop or downsample the case, or use a device with more memory", device=device,
    )


def preprocess(case: Case, card: ModelCard, *, device: Union[str, torch.device] = "cpu") -> tuple[torch.Tensor, NetworkGrid]:
    """The network input (1, C, *grid) float32 for ``case``, and the :class:`NetworkGrid` to map results back."""
    if card.source is not None:  # a model folder: its framework's preprocessing (nnU-Net's)
        return card.source.preprocess(case, card, device=device)
    indices = channel_indices(case, card)
    array = np.asarray(case.channels)
    array = array if array.dtype == np.float32 and array.dtype.isnative else array.astype(np.float32)
    with warnings.catch_warnings():  # a read-only array is fine: it is never written to
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(array)
    image = source if indices == list(range(source.shape[0])) else source[indices]
    image = image.to(device)
    grid = network_grid(case, card)
    ornt = grid.orientation
    # Resize first (in the case's axis order, on the large grid), then flip/permute the small result.
    if grid.resampled:
        image = _resize(image, grid.shape_in_case_axes, "linear")
    image = _reorient(image, ornt)
    if image.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        image = image.clone()  # normalisation works in place and the case is never modified
    image = _normalize(image, card.normalization)
    return image.unsqueeze(0), grid


def channel_indices(case: Case, card: ModelCard) -> list[int]:
    """Indices of the card's modalities among the case's channels, in the card's order; ValueError if missing."""
    have = [m.lower() for m in case.modalities]
    missing = [m for m in card.modalities if m not in have]
    if missing:
        raise ValueError(
            f"Case {case.name} has no {', '.join(missing)} channel{'s' if len(missing) > 1 else ''}, which model "
            f"{card.name} needs (it takes {', '.join(card.modalities)}; the case has {', '.join(have)}); "
            "open a case with those modalities or choose another model card."
        )
    if case.channels.shape[0] != len(have):
        raise ValueError(f"Case {case.name} has {case.channels.shape[0]} channels but {len(have)} modality names.")
    indices = [have.index(m) for m in card.modalities]
    for name, index in zip(card.modalities, indices):
        channel = case.channels[index]
        if channel.size and channel.min() == channel.max():
            raise ValueError(
                f"The {name} image of case {case.name} holds one value everywhere ({float(channel.flat[0]):g}), "
                "so it is empty; check that file."
            )
    return indices


def _orientation_transform(affine: np.ndarray, orientation: Optional[str]) -> np.ndarray:
    """The nibabel ornt transform from the case's axes to the card's orientation (identity when None)."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    if orientation is None:
        return np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    return ornt_transform(io_orientation(affine), axcodes2ornt(tuple(orientation)))


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """The ornt transform that undoes ``ornt``."""
    inverse = np.zeros_like(ornt)
    for axis, (new_axis, flip) in enumerate(ornt):
        inverse[int(new_axis)] = (axis, flip)
    return inverse


def _ornt_affine(ornt: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Voxel affine from reoriented to original indices (nibabel's ``inv_ornt_aff``)."""
    from nibabel.orientations import inv_ornt_aff

    return inv_ornt_aff(ornt, tuple(shape))


def _reorient(tensor: torch.Tensor, ornt: np.ndarray) -> torch.Tensor:
    """Flip and permute the last three axes of ``tensor`` as nibabel's ``apply_orientation`` does."""
    lead = tensor.ndim - 3
    flips = [lead + i for i, (_, flip) in enumerate(ornt) if flip == -1]
    if flips:
        tensor = tensor.flip(flips)
    order = list(range(lead)) + [lead + int(i) for i in np.argsort(ornt[:, 0])]
    return tensor.permute(order).contiguous() if order != list(range(tensor.ndim)) else tensor


def _target_shape(case: Case, card: ModelCard, shape: tuple[int, ...], spacing: np.ndarray) -> tuple[int, ...]:
    """The grid shape at the card's spacing, or ``shape`` when no resampling is needed or allowed."""
    if card.spacing is None or card.spacing_policy == "ignore":
        return shape
    target = np.array([s if t is None else t for s, t in zip(spacing, card.spacing)], dtype=float)
    if np.all(np.abs(spacing - target) <= SPACING_TOLERANCE * target):
        return shape
    if card.spacing_policy == "refuse":
        have = " x ".join(f"{s:.3g}" for s in spacing)
        want = " x ".join(f"{t:.3g}" for t in target)
        raise ValueError(
            f"Case {case.name} has voxels of {have} mm but model {card.name} expects {want} mm and its card "
            "refuses to resample (preprocessing.spacing_policy: refuse); resample the case first or set the "
            "policy to resample."
        )
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _resize_affine(old: Sequence[int], new: Sequence[int]) -> np.ndarray:
    """Voxel affine from a resized grid to the original one (voxel centres, same field of view)."""
    scale = np.array(old, dtype=float) / np.array(new, dtype=float)
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag(scale)
    matrix[:3, 3] = 0.5 * scale - 0.5
    return matrix


def _resize(tensor: torch.Tensor, shape: Sequence[int], interpolation: str) -> torch.Tensor:
    """Resize the last three axes to ``shape`` (trilinear or nearest, voxel-centre aligned)."""
    shape = tuple(int(s) for s in shape)
    if tuple(tensor.shape[-3:]) == shape:
        return tensor
    lead = tensor.shape[:-3]
    flat = tensor.reshape(1, -1, *tensor.shape[-3:])
    if interpolation == "linear":
        out = F.interpolate(flat.float(), size=shape, mode="trilinear", align_corners=False)
        out = out.to(tensor.dtype) if tensor.is_floating_point() else out
    elif interpolation == "nearest":
        out = F.interpolate(flat.float(), size=shape, mode="nearest-exact").to(tensor.dtype)
    else:
        raise ValueError(f"Unknown interpolation {interpolation!r}; use linear or nearest.")
    return out.reshape(*lead, *shape)


def _normalize(image: torch.Tensor, method: str) -> torch.Tensor:
    """Per-channel intensity normalisation of (C, *spatial), in place on ``image`` (a copy we own)."""
    if method == "none":
        return image
    if method not in ("zscore_nonzero", "zscore", "minmax"):
        raise ValueError(f"Unknown normalization {method!r}; use zscore_nonzero, zscore, minmax or none.")
    for channel in image:
        if method == "minmax":
            low, high = channel.min(), channel.max()
            channel.sub_(low).div_(torch.where(high > low, high - low, torch.ones_like(high)))
        elif method == "zscore":
            std, mean = torch.std_mean(channel, correction=0)
            channel.sub_(mean).div_(torch.where(std > 0, std, torch.ones_like(std)))
        else:
            background = channel == 0
            inside = channel[~background]
            if inside.numel() == 0:
                continue
            std, mean = torch.std_mean(inside, correction=0)
            channel.sub_(mean).div_(torch.where(std > 0, std, torch.ones_like(std))).masked_fill_(background, 0)
    return image


def as_tensor(array: ArrayLike) -> tuple[torch.Tensor, bool]:
    """A tensor view of ``array`` and whether it was numpy."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array)), True
    return array, False


def like_input(tensor: torch.Tensor, was_numpy: bool) -> ArrayLike:
    """Back to numpy when the input was numpy."""
    return tensor.cpu().numpy() if was_numpy else tensor
