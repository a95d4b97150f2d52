"""What every trust measure works on: a network, one input, the segmentation target, and how to explain it."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from .. import progress as _progress
from ..attribution import AttributionMethod, Target, explain, get_method
from ..attribution.base import samples_per_batch

#: Input-sized tensors a perturbation measure keeps per perturbed input of a batch (the perturbed copy).
PERTURBED_MAPS = 1

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard


@dataclass(frozen=True, eq=False)
class Problem:
    """A network, one input (1, C, *spatial) and the target (class outputs summed over regions) it explains."""

    network: torch.nn.Module
    inputs: torch.Tensor                 # (1, C, *spatial) on the network's device
    target: Target                       # masks on the input's grid
    class_names: tuple[str, ...]         # one per explained class (K_t)
    channel_names: tuple[str, ...]       # one per input channel (C)
    name: str = "case"
    label: np.ndarray | None = None      # true label values on the input's grid, when known
    class_labels: tuple[int, ...] | None = None   # label value of each explained class (with ``label``)

    def __post_init__(self) -> None:
        if self.inputs.ndim < 3 or self.inputs.shape[0] != 1:
            raise ValueError(f"A trust problem needs one input (1, C, *spatial), got {tuple(self.inputs.shape)}.")
        if tuple(self.inputs.shape[2:]) != self.target.spatial_shape:
            raise ValueError("The target masks must lie on the input's grid; build the target from this input.")
        if len(self.class_names) != len(self.target.classes):
            raise ValueError(f"Got {len(self.class_names)} class names for {len(self.target.classes)} explained classes.")
        if len(self.channel_names) != self.inputs.shape[1]:
            raise ValueError(f"Got {len(self.channel_names)} channel names for {self.inputs.shape[1]} input channels.")
        if self.label is not None and tuple(self.label.shape) != self.target.spatial_shape:
            raise ValueError("The true label must lie on the input's grid.")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape of the input."""
        return tuple(self.inputs.shape[2:])

    def lesion(self, index: int) -> np.ndarray:
        """The true region (bool, *spatial) of the ``index``-th explained class."""
        if self.label is None or self.class_labels is None:
            raise ValueError("This case has no true label; use a generated case or a case with a segmentation file.")
        return self.label == self.class_labels[index]


def as_method(method: str | AttributionMethod) -> AttributionMethod:
    """An attribution method instance from a registry name or an instance."""
    return get_method(method) if isinstance(method, str) else method


def method_label(method: str | AttributionMethod) -> str:
    """The name under which a method's results are reported."""
    return method if isinstance(method, str) else (method.name or type(method).__name__)


def relevance_of(
    problem: Problem,
    method: str | AttributionMethod,
    *,
    network: torch.nn.Module | None = None,
    inputs: torch.Tensor | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> tuple[np.ndarray, float]:
    """The relevance (K_t, C, *spatial) of the problem's target (another network or input if given) and its seconds."""
    network = problem.network if network is None else network
    inputs = problem.inputs if inputs is None else inputs
    start = time.perf_counter()
    with _progress.cancel_inside(network, should_cancel):   # a pass over a large crop takes seconds
        result = explain(network, inputs, problem.target, as_method(method), progress=progress,
                         should_cancel=should_cancel)
    return result.relevance, time.perf_counter() - start


def target_scores(
    problem: Problem,
    make_inputs: Callable[[int, int], torch.Tensor],
    n_inputs: int,
    *,
    batch_size: int = 0,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> np.ndarray:
    """Explained scalars (n_inputs, K_t) of perturbed inputs made in batches by ``make_inputs(start, stop)``.

    With ``batch_size`` 0 batches are paced (:func:`.progress.paced`): one input first, then as many
    as take about 1.5 s, at most what fits the memory cap, so the bar moves and Cancel is heard
    (also inside a pass) whatever the crop costs.
    """
    largest = samples_per_batch(problem.network, problem.inputs, n_inputs, batch_size, with_gradients=False,
                                maps_per_sample=PERTURBED_MAPS)
    if batch_size > 0:
        parts = (slice(start, min(start + largest, n_inputs)) for start in range(0, n_inputs, largest))
    else:
        parts = _progress.paced(n_inputs, largest, progress, should_cancel)
    out = []
    with torch.no_grad(), _progress.cancel_inside(problem.network, should_cancel):
        for part in parts:
            if batch_size > 0:
                _progress.step(part.start, n_inputs, progress, should_cancel)
            batch = make_inputs(part.start, part.stop)
            out.append(problem.target.scalars(problem.network(batch)).double().cpu())
    if batch_size > 0:
        _progress.step(n_inputs, n_inputs, progress, None)
    return torch.cat(out).numpy()


def part_of(progress: _progress.ProgressFn | None, index: int, count: int) -> _progress.ProgressFn | None:
    """A progress callback for the ``index``-th of ``count`` equal parts of ``progress``."""
    if progress is None:
        return None
    return lambda done, total: progress(index * max(total, 1) + done, count * max(total, 1))


def stages(
    progress: _progress.ProgressFn | None, weights: Sequence[float]
) -> Iterator[_progress.ProgressFn | None]:
    """Progress callbacks for consecutive stages of one job, on one 0..1000 scale split by ``weights``."""
    total = float(sum(weights)) or 1.0
    start = 0.0
    for weight in weights:
        if progress is None:
            yield None
        else:
            low, span = start, weight

            def report(done: int, count: int, low=low, span=span) -> None:
                progress(int(1000 * (low + span * done / max(count, 1)) / total), 1000)

            yield report
        start += weight


def case_problem(
    case: "Case",
    card: "ModelCard",
    *,
    classes: Sequence[int | str] | int | str | None = None,
    network: torch.nn.Module | None = None,
    device: str | torch.device | None = None,
    margin: int | None = None,
    target: str = "predicted",
    region: np.ndarray | None = None,
    voxel: Sequence[float] | None = None,
    confident: bool = False,
    threshold: float = 0.5,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> Problem:
    """The problem of a case: preprocessed as the card says, cropped around its target.

    ``target`` as ``explain_case`` takes it: ``predicted`` (each class's predicted region, the
    default), ``region`` (``region``, a boolean array on the case grid: a painted region) or
    ``voxel`` (``voxel``, a case voxel index: a clicked point). A chosen class the model does not
    predict is left out and named in ``problem.target.skipped`` (every class empty: a ValueError).
    """
    # The crop is the one ``explain_case`` uses for non-additive methods: the union of the
    # predicted regions, ``margin`` voxels wider on each side (default half a window), sized to
    # suit the network's strides. The case's label, when it has one, comes along on that grid.
    from ..attribution.explain_case import case_target, class_indices, crop_box
    from ..attribution.slicewise import SliceWise
    from ..model.card import build_network
    from ..model.device import pick_device
    from ..model.preprocess import preprocess

    indices = class_indices(card, classes)
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    image, grid = preprocess(case, card, device=device)
    goal = case_target(case, card, image, grid, network, indices, target=target, region=region, voxel=voxel,
                       confident=confident, threshold=threshold, progress=progress, should_cancel=should_cancel)
    model = network if card.spatial_dims == 3 else SliceWise(network, card.slice_axis)
    window = list(card.roi_size)
    fixed_axis = None
    if card.spatial_dims == 2:
        window.insert(card.slice_axis, 1)
        fixed_axis = card.slice_axis
    source, inside, sizes = crop_box(goal.masks.any(0), window, margin, fixed_axis)
    crop = image.new_zeros(image.shape[:2] + sizes)
    crop[(slice(None), slice(None)) + inside] = image[(slice(None), slice(None)) + source]
    indices = goal.classes  # without the classes skipped as not predicted
    masks = np.zeros((len(indices),) + sizes, dtype=bool)
    masks[(slice(None),) + inside] = goal.masks[(slice(None),) + source]
    target = replace(goal, masks=masks)
    label = class_labels = None
    if case.label is not None:
        on_grid = np.rint(grid.to_network_grid(np.asarray(case.label, dtype=np.float32), interpolation="nearest"))
        label = np.zeros(sizes, dtype=np.int32)
        label[inside] = on_grid[source].astype(np.int32)
        class_labels = tuple(card.classes[c].label for c in indices)
    return Problem(model, crop, target, tuple(card.class_names[c] for c in indices), tuple(card.modalities),
                   case.name, label, class_labels)
