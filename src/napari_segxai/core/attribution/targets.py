"""Segmentation targets: the scalar an attribution method explains (the Agg2Exp proxy).

A segmentation network maps an input (1, C, *spatial) to an output (1, K, *spatial): one map
per class. Attribution methods explain one scalar per class, so the output of class ``c`` is
aggregated over a target mask ``M_c`` (Agg2Exp; Schulz et al. 2020 style region targets)::

    S_c(x) = sum over voxels v in M_c of  y_c(x)[v]

where ``y`` is the logit map by default. Logits are the default because probabilities
saturate (a confident voxel has a near-zero gradient, so the map shows only the uncertain
border of the region) and, through the softmax, couple the classes (the probability of class
c also moves when any other class's logit moves). ``output="probabilities"`` is offered for
users who want the explained quantity to be the probability itself.

The mask is one of:

- ``predicted``: the voxels predicted as c (argmax over classes for softmax models; p_c > 0.5
  for sigmoid models), optionally only the confident ones (p_c > threshold, default 0.5);
- ``region``: a region given by the user (a painted labels layer, any boolean array);
- ``voxel``: a single voxel (a click).

One backward pass of ``S_c`` serves all voxels of the region at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

TARGET_KINDS: tuple[str, ...] = ("predicted", "region", "voxel")
OUTPUT_SPACES: tuple[str, ...] = ("logits", "probabilities")
ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid")
DEFAULT_CONFIDENCE = 0.5


@dataclass(frozen=True, eq=False)
class Target:
    """The scalars to explain: per class c, the class-c output summed over a boolean mask."""

    kind: str                       # one of TARGET_KINDS
    classes: tuple[int, ...]        # output channel index of each explained class
    masks: np.ndarray               # bool (K_t, *spatial): the region of each explained class
    threshold: float | None = None  # kept only voxels with p_c > threshold (predicted kind only)
    output: str = "logits"          # "logits" or "probabilities"
    activation: str = "softmax"     # how the network's logits become probabilities
    weights: np.ndarray | None = None  # float (K_t, *spatial) voxel weights inside the masks (sliding windows)
    class_names: tuple[str, ...] | None = None  # name of each explained class, for what the user reads
    label_values: tuple[int, ...] | None = None  # label value each explained class writes in a segmentation
    skipped: tuple[str, ...] = ()   # names of chosen classes left out because none of their voxels is predicted

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"Unknown target kind {self.kind!r}; choose one of {', '.join(TARGET_KINDS)}.")
        if self.output not in OUTPUT_SPACES:
            raise ValueError(f"Unknown output space {self.output!r}; choose one of {', '.join(OUTPUT_SPACES)}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
        if len(self.classes) == 0:
            raise ValueError("A target needs at least one class to explain; pass one or more class indices.")
        masks = np.asarray(self.masks)
        if masks.dtype != bool or masks.ndim < 2 or masks.shape[0] != len(self.classes):
            raise ValueError(
                f"Target masks must be a boolean array (n_classes, *spatial) with one mask per class "
                f"({len(self.classes)}), got {masks.dtype} {masks.shape}."
            )
        masks = masks.copy()
        masks.flags.writeable = False
        object.__setattr__(self, "masks", masks)
        if self.weights is not None:
            weights = np.array(self.weights, dtype=np.float32)
            if weights.shape != masks.shape:
                raise ValueError(f"Target weights must have the masks' shape {masks.shape}, got {weights.shape}.")
            weights.flags.writeable = False
            object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        for field_name in ("class_names", "label_values"):
            value = getattr(self, field_name)
            if value is not None and len(value) != len(self.classes):
                raise ValueError(f"Target {field_name} must give one entry per class ({len(self.classes)}), got {len(value)}.")
        empty = [self.shown_names[k] for k, m in enumerate(masks) if not m.any()]
        if empty:
            raise ValueError(
                f"The target region of {empty[0]} is empty; choose another class, "
                f"lower the confidence threshold or paint a region."
            )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape of the masks (that of the network output)."""
        return tuple(self.masks.shape[1:])

    @property
    def voxel_counts(self) -> tuple[int, ...]:
        """Number of voxels in each class's target region."""
        return tuple(int(m.sum()) for m in self.masks)

    @property
    def shown_names(self) -> tuple[str, ...]:
        """Each class as the user reads it: ``edema (label 2)``, or ``class 1`` (output index) without names."""
        if self.class_names is None:
            return tuple(f"class {c}" for c in self.classes)
        if self.label_values is None:
            return self.class_names
        return tuple(f"{n} (label {v})" for n, v in zip(self.class_names, self.label_values))

    def describe(self) -> str:
        """One line saying what is explained, with each class's voxels by name and label value."""
        where = {"predicted": "predicted region", "region": "user region", "voxel": "voxel"}[self.kind]
        if self.kind == "predicted" and self.threshold is not None:
            where += f" with p > {self.threshold:g}"
        if self.kind == "voxel":
            where += " " + str(tuple(int(i) for i in np.argwhere(self.masks[0])[0]))
        counts = ", ".join(f"{c}: {n} voxels" for c, n in zip(self.shown_names, self.voxel_counts))
        return f"sum of class {self.output} over the {where} ({counts})"

    def named(self, class_names: Sequence[str], label_values: Sequence[int] | None = None) -> "Target":
        """The same target with the names (and label values) of its classes, indexed by output channel."""
        return replace(self, class_names=tuple(str(class_names[c]) for c in self.classes),
                       label_values=None if label_values is None else tuple(int(label_values[c]) for c in self.classes))

    def subset(self, index: int) -> "Target":
        """The same target restricted to its ``index``-th class."""
        weights = None if self.weights is None else self.weights[index : index + 1]
        names = None if self.class_names is None else self.class_names[index : index + 1]
        labels = None if self.label_values is None else self.label_values[index : index + 1]
        return Target(self.kind, (self.classes[index],), self.masks[index : index + 1],
                      self.threshold, self.output, self.activation, weights, names, labels)

    def _mask_tensor(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The masks as a tensor on ``device``, made once per device and dtype."""
        cache = self.__dict__.setdefault("_tensors", {})
        key = (str(device), dtype)
        if key not in cache:
            values = self.masks if self.weights is None else self.weights * self.masks
            cache[key] = torch.from_numpy(np.array(values)).to(device=device, dtype=dtype)
        return cache[key]

    def scalars(self, output: torch.Tensor) -> torch.Tensor:
        """The explained scalars (B, K_t) from a network output (B, K, *spatial): (weighted) sums over the masks."""
        if tuple(output.shape[2:]) != self.spatial_shape:
            raise ValueError(
                f"The network output has spatial shape {tuple(output.shape[2:])} but the target masks "
                f"have {self.spatial_shape}; build the target on the grid the network sees."
            )
        return self.voxel_terms(output).flatten(2).sum(-1)

    def voxel_terms(self, output: torch.Tensor, box: tuple[slice, ...] | None = None) -> torch.Tensor:
        """Each voxel's term (B, K_t, *box) of the scalars, from an output (B, K, *box) covering ``box`` of the grid.

        Every term depends on its own voxel's output only (the softmax mixes classes, never voxels),
        so the scalars are the sums of the terms over any partition of the grid.
        """
        if max(self.classes) >= output.shape[1]:
            raise ValueError(
                f"Class index {max(self.classes)} is out of range for a network with "
                f"{output.shape[1]} output classes."
            )
        if self.output == "probabilities":
            output = _probabilities(output, self.activation)
        index = torch.as_tensor(self.classes, device=output.device)
        selected = output.index_select(1, index)
        masks = self._mask_tensor(output.device, selected.dtype)
        return selected * (masks if box is None else masks[(slice(None),) + tuple(box)])


def _probabilities(output: torch.Tensor, activation: str) -> torch.Tensor:
    """Class probabilities from logits (B, K, *spatial)."""
    return torch.softmax(output, dim=1) if activation == "softmax" else torch.sigmoid(output)


def _check_classes(classes: int | Sequence[int], n_classes: int) -> tuple[int, ...]:
    """Class indices as a tuple, each checked against the number of output classes."""
    classes = (int(classes),) if isinstance(classes, (int, np.integer)) else tuple(int(c) for c in classes)
    if not classes:
        raise ValueError("No class to explain was given; pass one or more class indices.")
    bad = [c for c in classes if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"Class index {bad[0]} is out of range; the model has {n_classes} classes (0..{n_classes - 1}).")
    return classes


def predicted_target(
    output: torch.Tensor | np.ndarray,
    classes: int | Sequence[int],
    *,
    confident: bool = False,
    threshold: float = DEFAULT_CONFIDENCE,
    output_space: str = "logits",
    activation: str = "softmax",
    class_names: Sequence[str] | None = None,
    label_values: Sequence[int] | None = None,
    skip_empty: bool = False,
    outside: np.ndarray | torch.Tensor | None = None,
) -> Target:
    """Target over the voxels predicted as each class, optionally only those with p_c > threshold.

    ``class_names`` and ``label_values`` (one per output channel) name the classes in what the user
    reads; voxels where ``outside`` (bool, *spatial) is true are never predicted (outside the head). With ``skip_empty`` a class with no predicted voxel is left out and named in
    ``Target.skipped`` ("no finding" is a result); only when every class is empty is it a ValueError.
    """
    logits = torch.as_tensor(output).detach()
    if logits.ndim < 3 or logits.shape[0] != 1:
        raise ValueError(f"Expected a network output of shape (1, K, *spatial), got {tuple(logits.shape)}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
    if confident and not 0.0 <= threshold < 1.0:
        raise ValueError(f"The confidence threshold must be in [0, 1), got {threshold}.")
    classes = _check_classes(classes, logits.shape[1])
    probabilities = _probabilities(logits.float(), activation)[0]
    if activation == "softmax":
        predicted = probabilities.argmax(0)
        masks = torch.stack([predicted == c for c in classes])
    else:
        masks = torch.stack([probabilities[c] > 0.5 for c in classes])
    if confident:
        masks &= torch.stack([probabilities[c] > threshold for c in classes])
    if outside is not None:
        masks &= ~torch.as_tensor(np.asarray(outside, dtype=bool), device=masks.device)
    masks = masks.cpu().numpy()
    skipped: tuple[str, ...] = ()
    if skip_empty:
        names = [f"class {c}" if class_names is None else str(class_names[c]) for c in classes]
        present = [k for k, m in enumerate(masks) if m.any()]
        skipped = tuple(names[k] for k in range(len(classes)) if k not in present)
        if not present:
            where = f" at probability above {threshold:g}" if confident else ""
            advice = "lower the confidence threshold or " if confident else ""
            raise ValueError(f"Nothing to explain: no {listed(skipped)} is predicted in this case{where}; "
                             f"{advice}choose a region or a voxel to explain instead.")
        classes, masks = tuple(classes[k] for k in present), masks[present]
    names = None if class_names is None else tuple(str(class_names[c]) for c in classes)
    labels = None if class_names is None or label_values is None else tuple(int(label_values[c]) for c in classes)
    return Target("predicted", classes, masks, threshold if confident else None, output_space, activation,
                  class_names=names, label_values=labels, skipped=skipped)


def skipped_line(skipped: Sequence[str]) -> str:
    """The line that says which chosen classes were not predicted ("no enhancing predicted: skipped")."""
    return f"no {listed(skipped)} predicted: skipped" if skipped else ""


def listed(names: Sequence[str], conjunction: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c`` (or with another ``conjunction``)."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" {conjunction} " + names[-1]


def region_target(
    region: np.ndarray | torch.Tensor,
    classes: int | Sequence[int],
    n_classes: int,
    *,
    output_space: str = "logits",
    activation: str = "softmax",
) -> Target:
    """Target over a user region (bool (*spatial)), the same region for every class."""
    region = np.asarray(region.detach().cpu() if isinstance(region, torch.Tensor) else region)
    if region.dtype != bool:
        region = region != 0
    classes = _check_classes(classes, n_classes)
    masks = np.broadcast_to(region, (len(classes),) + region.shape)
    return Target("region", classes, masks, None, output_space, activation)


def voxel_target(
    voxel: Sequence[int],
    spatial_shape: Sequence[int],
    classes: int | Sequence[int],
    n_classes: int,
    *,
    output_space: str = "logits",
    activation: str = "softmax",
) -> Target:
    """Target on a single voxel (a clicked point)."""
    voxel = tuple(int(round(float(i))) for i in voxel)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if len(voxel) != len(spatial_shape) or any(not 0 <= i < s for i, s in zip(voxel, spatial_shape)):
        raise ValueError(f"Voxel {voxel} lies outside the volume of shape {spatial_shape}; click inside the image.")
    region = np.zeros(spatial_shape, dtype=bool)
    region[voxel] = True
    classes = _check_classes(classes, n_classes)
    return Target("voxel", classes, np.broadcast_to(region, (len(classes),) + spatial_shape),
                  None, output_space, activation)
