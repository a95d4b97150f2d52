"""The members of an uncertainty ensemble: recorded checkpoints (or folds), test-time flips, MC dropout.

A member is one segmentation run of :func:`.inference.segment`: a network (or the card's own) and the
spatial axes along which the case is flipped before the run and the probabilities flipped back after.
Networks are built when their run starts, so one member's weights are held at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .card import ModelCard, build_network
from .inference import mirror_subsets

#: The ensembles a user can pick: the model's recorded checkpoints, test-time flips, MC dropout.
MODES: tuple[str, ...] = ("checkpoints", "flips", "dropout")

#: Forward samples of MC dropout unless the caller asks for another number.
DEFAULT_SAMPLES = 8


@dataclass(frozen=True)
class Member:
    """One run of the ensemble: what it is called, how its network is made, the case axes it flips."""

    name: str
    network: Callable[[torch.device], Optional[torch.nn.Module]]  # None: the card's own network
    flip_axes: tuple[int, ...] = ()
    seed: Optional[int] = None   # MC dropout: the run's random seed


def check_mode(mode: str) -> str:
    """``mode`` if it names an ensemble, else ValueError with the choices."""
    if mode not in MODES:
        raise ValueError(f"Unknown uncertainty mode {mode!r}; choose one of {', '.join(MODES)}.")
    return mode


def plan_members(case, card: ModelCard, mode: str, *, network: Optional[torch.nn.Module] = None,
                 device: torch.device | str = "cpu", samples: int = DEFAULT_SAMPLES, seed: int = 0) -> list[Member]:
    """The runs of ``mode`` for ``card`` on ``case`` (ValueError with a sentence when the model has none)."""
    check_mode(mode)
    if mode == "dropout":  # built now: whether it has dropout is known before any run
        network = network if network is not None else build_network(card, device)
    own = _own_network(card, network)
    if mode == "flips":
        return [Member(_flip_name(axes), own, axes) for axes in mirror_subsets(flippable_axes(case, card))]
    if mode == "dropout":
        if int(samples) < 2:
            raise ValueError(f"MC dropout needs at least 2 samples, got {samples}; ask for 8 or more.")
        if not has_dropout(network):
            raise ValueError(
                f"The network of model {card.name} has no dropout layer with p > 0, so MC dropout has nothing "
                "to sample; choose flips (or checkpoints, when the model recorded them) instead."
            )
        return [Member(f"dropout sample {i + 1}", _with_dropout(own), (), seed + i) for i in range(int(samples))]
    return checkpoint_members(card)


def _own_network(card: ModelCard, network: Optional[torch.nn.Module]) -> Callable[[torch.device], Optional[torch.nn.Module]]:
    """A factory of the card's network (or the one given), built once and shared by every run."""
    built: dict[str, torch.nn.Module] = {}

    def make(device: torch.device) -> torch.nn.Module:
        if "network" not in built:
            built["network"] = network.to(device) if network is not None else build_network(card, device)
        return built["network"]

    return make


def checkpoint_members(card: ModelCard) -> list[Member]:
    """The folds of a model of several (nnU-Net), else the checkpoints its training recorded."""
    if len(card.fold_weights) > 1:
        return [Member(f"fold {path.parent.name.removeprefix('fold_')}",
                       lambda device, i=i: build_network(card, device, member=i))
                for i, path in enumerate(card.fold_weights)]
    from ..influence.record import NoTrainingRecord
    from ..influence.training_set import training_record

    try:
        record = training_record(card)
    except NoTrainingRecord:
        record = None
    checkpoints = record.checkpoints if record is not None else ()
    if len(checkpoints) < 2:
        found = "only one recorded checkpoint" if checkpoints else "no recorded training checkpoints"
        raise ValueError(
            f"Model {card.name} has {found} and no folds, so there is no checkpoint ensemble; train it with "
            "`segxai train` (or record checkpoints with TrainingRecorder), or choose flips or dropout."
        )
    return [Member(f"checkpoint step {ckpt.step}",
                   lambda device, ckpt=ckpt: _checkpoint_network(card, record, ckpt.path, device))
            for ckpt in checkpoints]


def _checkpoint_network(card: ModelCard, record, path, device: torch.device) -> torch.nn.Module:
    """The recorded architecture with one checkpoint's weights (the card's trust covers its checkpoints)."""
    from .architectures import create_network
    from .weights import load_into, load_state_dict

    network = create_network(record.architecture, record.kwargs, source=f"Training manifest {record.manifest}")
    load_into(network, load_state_dict(path, trusted=card.trusted), path)
    return network.to(device).eval()


# ---------------------------------------------------------------------------------------------- flips


def flippable_axes(case, card: ModelCard) -> tuple[int, ...]:
    """The case's array axes a flip may mirror: all of them, less the slice axis of a slice-wise model."""
    axes = tuple(range(len(case.shape)))
    if card.spatial_dims == 3 or card.slice_axis is None or len(axes) != 3:
        return axes
    from nibabel.orientations import io_orientation

    world = io_orientation(np.asarray(case.affine))[:, 0]  # the world (RAS) axis each array axis runs along
    return tuple(a for a in axes if int(world[a]) != int(card.slice_axis))


def _flip_name(axes: tuple[int, ...]) -> str:
    return "no flip" if not axes else "flip " + "+".join("xyzt"[a] for a in axes)


def flipped_case(case, axes: tuple[int, ...]):
    """``case`` with its channels mirrored along the array ``axes`` (same affine, no label)."""
    if not axes:
        return case
    channels = np.ascontiguousarray(np.flip(case.channels, axis=tuple(a + 1 for a in axes)))
    return dataclasses.replace(case, channels=channels, label=None)


def unflip(probabilities: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Class maps (K, *spatial) of a flipped run mirrored back onto the case's grid."""
    if not axes:
        return probabilities
    return np.ascontiguousarray(np.flip(probabilities, axis=tuple(a + 1 for a in axes)))


# ---------------------------------------------------------------------------------------------- MC dropout


def has_dropout(network: torch.nn.Module) -> bool:
    """Whether ``network`` has a dropout layer that drops anything (p > 0)."""
    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and float(m.p) > 0 for m in network.modules())


class MonteCarloDropout(torch.nn.Module):
    """A network whose dropout layers stay on in eval mode (Gal & Ghahramani 2016, MC dropout).

    Everything else (batch norm statistics above all) follows eval mode as usual, so ``segment``'s
    ``network.eval()`` gives a stochastic forward pass that differs only by the dropped units.
    """

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def train(self, mode: bool = True) -> "MonteCarloDropout":
        super().train(mode)
        for module in self.network.modules():
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                module.train(True)
        return self


def _with_dropout(own: Callable[[torch.device], Optional[torch.nn.Module]]) -> Callable[[torch.device], torch.nn.Module]:
    """A factory of the card's network wrapped so that its dropout stays on."""
    wrapped: dict[str, MonteCarloDropout] = {}

    def make(device: torch.device) -> MonteCarloDropout:
        if "network" not in wrapped:
            wrapped["network"] = MonteCarloDropout(own(device))
        return wrapped["network"]

    return make
