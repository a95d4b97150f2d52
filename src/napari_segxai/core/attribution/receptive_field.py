"""How far a change of the input reaches in a segmentation network's output: the receptive field, measured.

A perturbation of a convolutional network's input changes its output only within the
receptive field around it. :func:`measure_reach` measures it on the input itself: the support
of the gradient of a randomly weighted sum of the outputs in one block at the centre (a block of
the network's downsampling factor, so every phase of its pooling grid is covered) with respect
to the input, on the input and (for the whole support) on Gaussian noise of its shape; with a
tolerance, on the input only, gradients below that share of the peak left out. Instance and group normalisation
mix statistics over the whole volume; :func:`held_normalisation` holds their statistics at those
of the unperturbed input so the network becomes local (what a perturbation then changes is
exact up to its own small effect on those statistics). Where the support still reaches the
input's border (attention, squeeze-and-excitation, global pooling, a TorchScript network with
normalisation inside) the reach is unbounded and the caller evaluates the whole input.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from .unchanged import ChangedBoxes, changed_voxels

#: Normalisations that mix statistics over space (eval-mode batch norm uses running statistics and is local).
MIXING_NORMS: tuple[type[nn.Module], ...] = (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Reach:
    """How far an input change reaches in the output, per spatial axis, and how crops must be aligned."""

    radius: tuple[int, ...]       # voxels beyond a changed voxel whose outputs can change (per axis)
    factor: tuple[int, ...]       # the network's total downsampling: crops start on multiples of it
    held: bool = False            # normalisation statistics are held at the unperturbed input's
    tolerance: float = 0.0        # 0: the whole support (exact); else gradients below this share of the peak left out
    reason: str = ""              # why the reach is unbounded ("" when bounded)

    @property
    def bounded(self) -> bool:
        return not self.reason

    def describe(self) -> str:
        """One line for the user: the radius, or why there is none."""
        if not self.bounded:
            return f"whole input ({self.reason})"
        radius = " x ".join(str(r) for r in self.radius)
        held = ", normalisation statistics held at the unperturbed input's" if self.held else ""
        cut = f", gradients under {self.tolerance:g} of the peak left out" if self.tolerance else ""
        return f"receptive-field radius {radius} voxels{held}{cut}"


def _mixes(module: nn.Module) -> bool:
    """Whether ``module`` normalises with statistics of the whole volume it sees."""
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return module.training or not module.track_running_stats
    return isinstance(module, nn.GroupNorm)


def _statistics(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance that ``module`` normalises ``x`` (B, C, *spatial) with, shaped to broadcast."""
    groups = module.num_groups if isinstance(module, nn.GroupNorm) else x.shape[1]
    grouped = x.detach().reshape(x.shape[0], groups, -1)
    mean, var = grouped.mean(-1), grouped.var(-1, unbiased=False)
    per_channel = x.shape[1] // groups
    shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
    return (mean.repeat_interleave(per_channel, 1).reshape(shape),
            var.repeat_interleave(per_channel, 1).reshape(shape))


def _normalised(module: nn.Module, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``module``'s output on ``x`` with the given statistics (and its affine weights when it has them)."""
    y = (x - mean) / torch.sqrt(var + module.eps)
    if getattr(module, "weight", None) is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = y * module.weight.view(shape) + module.bias.view(shape)
    return y


@contextlib.contextmanager
def held_normalisation(network: nn.Module, reference: torch.Tensor) -> Iterator[tuple[torch.Tensor, bool]]:
    """Run ``reference`` (1, C, *spatial) once, then, inside, normalise every input with its statistics.

    Yields the reference output and whether statistics are held (False when the network has
    no mixing normalisation, or they cannot be held: a TorchScript network, a module called twice
    in one pass, or one pass seeing several samples, as a slice-wise 2D network does).
    """
    norms = [m for m in network.modules() if _mixes(m)]
    scripted = any(isinstance(m, torch.jit.ScriptModule) for m in network.modules())
    recorded: dict[nn.Module, list] = {m: [] for m in norms}

    def record(module, inputs, _output):
        recorded[module].append(_statistics(module, inputs[0]))

    handles = [m.register_forward_hook(record) for m in norms] if not scripted else []
    try:
        with torch.no_grad():
            output = network(reference)
    finally:
        for handle in handles:
            handle.remove()
    holdable = bool(norms) and not scripted and all(len(s) == 1 and s[0][0].shape[0] == 1 for s in recorded.values())
    if not holdable:
        yield output, False
        return

    def replace(module, inputs, _output):
        mean, var = recorded[module][0]
        return _normalised(module, inputs[0], mean, var)

    handles = [m.register_forward_hook(replace) for m in norms]
    try:
        yield output, True
    finally:
        for handle in handles:
            handle.remove()


def downsampling(network: nn.Module, sample: torch.Tensor) -> tuple[int, ...] | None:
    """The network's total downsampling per axis: the input's side over the smallest side of any module's output.

    None when it cannot be read (a TorchScript network takes no hooks, a slice-wise network's layers have
    other dimensions) or a side does not divide.
    """
    if any(isinstance(m, torch.jit.ScriptModule) for m in network.modules()):
        return None
    spatial = tuple(sample.shape[2:])
    smallest = list(spatial)
    seen = []

    def hook(_module, _inputs, output):
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor) and tensor.ndim == sample.ndim:
                seen.append(True)
                for axis, side in enumerate(tensor.shape[2:]):
                    smallest[axis] = min(smallest[axis], int(side))

    handles = [m.register_forward_hook(hook) for m in network.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            network(sample)
    finally:
        for handle in handles:
            handle.remove()
    if not seen or any(s % m for s, m in zip(spatial, smallest)):   # not seen: layers of other dims (slice-wise)
        return None
    return tuple(s // m for s, m in zip(spatial, smallest))


def _support(network: nn.Module, probe: torch.Tensor, block: tuple[slice, ...], tolerance: float,
             generator: torch.Generator) -> list[tuple[int, int]]:
    """Per axis, the first and last input index where the gradient of a random sum over ``block``'s outputs is non-zero."""
    x = probe.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output = network(x)[(slice(0, 1), slice(None)) + block]
        weights = torch.randn(output.shape, generator=generator, dtype=output.dtype).to(output.device)
        (grad,) = torch.autograd.grad((output * weights).sum(), x)
    envelope = grad.detach().abs().flatten(0, 1).amax(0)
    peak = float(envelope.max())
    inside = envelope > tolerance * peak if tolerance > 0 else envelope > 0
    extents = []
    for axis in range(inside.ndim):
        others = tuple(a for a in range(inside.ndim) if a != axis)
        present = torch.nonzero(inside.any(dim=others) if others else inside).flatten()
        extents.append((int(present.min()), int(present.max())) if len(present) else (block[axis].start, block[axis].start))
    return extents


_MEASURED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def measure_reach(network: nn.Module, inputs: torch.Tensor, tolerance: float = 0.0, hold: bool = True) -> Reach:
    """The reach of a change of ``inputs`` (1, C, *spatial) in ``network``'s output, measured on it (see module doc).

    Without ``hold``, a network with instance or group norm is unbounded at once (nothing is run).
    Measured once per network, input shape and tolerance, then remembered.
    """
    if not hold and any(_mixes(m) for m in network.modules()):
        none = tuple(0 for _ in inputs.shape[2:])
        return Reach(none, none, True, tolerance, "the network normalises with statistics of the whole volume "
                     "(instance or group norm); holding them is approximate (hold_statistics=True allows it)")
    key = (tuple(inputs.shape), str(inputs.device), float(tolerance))
    cache = _MEASURED.setdefault(network, {})
    if key not in cache:
        cache[key] = _measure(network, inputs, tolerance)
    return cache[key]


def _measure(network: nn.Module, inputs: torch.Tensor, tolerance: float) -> Reach:
    spatial = tuple(inputs.shape[2:])
    none = tuple(0 for _ in spatial)
    factor = downsampling(network, inputs)
    if factor is None:
        factor = tuple(_granule(s) for s in spatial)
    with held_normalisation(network, inputs) as (_, held):
        if any(_mixes(m) for m in network.modules()) and not held:
            return Reach(none, factor, False, tolerance,
                         "its normalisation mixes the whole volume and cannot be held (a TorchScript or slice-wise network)")
        block = tuple(slice(s // 2 // f * f, min(s, s // 2 // f * f + f)) for s, f in zip(spatial, factor))
        generator = torch.Generator().manual_seed(0)
        probes = [inputs]
        if tolerance == 0:   # the whole support: noise reaches what the input's dead units may hide
            probes.append(torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype).to(inputs.device))
        extents = [_support(network, probe, block, tolerance, generator) for probe in probes]
    radius, touching = [], []
    for axis, (s, b) in enumerate(zip(spatial, block)):
        lo = min(e[axis][0] for e in extents)
        hi = max(e[axis][1] for e in extents)
        if lo == 0 or hi == s - 1:
            touching.append(axis)
        radius.append(max(b.stop - 1 - lo, hi - b.start, 0))   # the farthest (output, input) pair over every phase
    if touching:
        return Reach(tuple(radius), factor, held, tolerance,
                     f"an output voxel depends on input as far as the border of this {' x '.join(map(str, spatial))} "
                     f"input (a global operation, or a receptive field as large as the input)")
    return Reach(tuple(radius), factor, held, tolerance)


def _granule(size: int) -> int:
    """The largest power of two (at most 32) dividing ``size``: a safe crop alignment when downsampling is unknown."""
    granule = 1
    while size % (granule * 2) == 0 and granule < 32:
        granule *= 2
    return granule


def crop_for(box: Sequence[slice], reach: Reach, spatial: Sequence[int], tile: Sequence[int] | None = None,
             extent: Sequence[int] | None = None) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """For a changed ``box`` of the input: the crop to evaluate, and the zone of outputs it can change.

    The zone is the box widened by the radius; the crop widens the zone by the radius again (so
    every output in the zone sees all it depends on), starts on a multiple of the downsampling
    factor and ends on one or at the border (so the network accepts it and pools on the same grid).
    With ``tile`` (per axis), boxes of at most ``extent`` voxels starting in the same tile share one
    crop, so its unperturbed pass serves them all.
    """
    tile = tile or (1,) * len(spatial)
    extent = extent or tuple(b.stop - b.start for b in box)
    zone, crop = [], []
    for b, r, f, s, t, e in zip(box, reach.radius, reach.factor, spatial, tile, extent):
        zone.append(slice(max(0, b.start - r), min(s, b.stop + r)))
        first = b.start // t * t
        start = max(0, (first - 2 * r) // f * f)
        stop = min(s, math.ceil((first + t - 1 + e + 2 * r) / f) * f) if t > 1 else min(s, math.ceil((b.stop + 2 * r) / f) * f)
        crop.append(slice(start, stop))
    return tuple(crop), tuple(zone)


#: Forward-pass equivalents of measuring the receptive field: two forward and backward passes and the held statistics.
REACH_PASSES = 7


class BoundedByReach:
    """A perturbation method that, with its ``bounded`` parameter, runs only on what a change can reach.

    Carries what :meth:`prepared` measured on the network and input through the copies of itself
    that settling its automatic parameters makes (:meth:`replaced`): the :class:`Reach`, and where
    the input already holds what the method writes (:mod:`.unchanged`), so that its cost leaves out
    perturbations that change nothing. Mixed in before :class:`.base.AttributionMethod`; its
    parameters include ``bounded``, ``reach_tolerance``, ``hold_statistics`` and ``per_channel``.
    """

    _reach: Reach | None = None
    _changes: ChangedBoxes | None = None

    def replacement(self, inputs: torch.Tensor) -> torch.Tensor | float:
        """What a perturbation writes into the input (1, C, *spatial): a value or a tensor of its shape."""
        raise NotImplementedError

    def changes(self, inputs: torch.Tensor) -> torch.Tensor:
        """(groups, *spatial) bool: where a perturbation of ``inputs`` changes it (:func:`.unchanged.changed_voxels`)."""
        return changed_voxels(inputs, self.replacement(inputs), self.params["per_channel"])

    def prepared(self, network: nn.Module, inputs: torch.Tensor):
        """This method knowing where perturbing ``inputs`` changes them and, with ``bounded``, the network's receptive field."""
        method = self.replaced()
        method._changes = ChangedBoxes(self.changes(inputs))
        if self.params["bounded"]:
            method._reach = measure_reach(network, inputs, self.params["reach_tolerance"], self.params["hold_statistics"])
        return method

    def ready(self, network: nn.Module, inputs: torch.Tensor):
        """This method prepared for ``inputs`` unless it already is (or is not bounded)."""
        return self.prepared(network, inputs) if self.params["bounded"] and self._reach is None else self

    def replaced(self, **params):
        """A copy with ``params`` changed that keeps what was measured (and a fixed baseline)."""
        method = type(self)(**{**self.params, **params})
        method._reach, method._changes = self._reach, self._changes
        method._fixed_baseline = self._fixed_baseline
        return method

    def changed_boxes(self, spatial: Sequence[int], starts, stops):
        """(groups, n_1, ..., n_d) bool of the boxes of a grid that change the input, or None when not measured on ``spatial``."""
        if self._changes is None or self._changes.spatial != tuple(spatial):
            return None
        return self._changes.changing(starts, stops)

    @property
    def reach_passes(self) -> int:
        """Forward-pass equivalents spent measuring the reach (0 when nothing was run)."""
        return REACH_PASSES if self._reach is not None and self._reach.factor[0] else 0
