"""What an explanation costs, said before it starts: passes through the network, seconds on this device, memory.

Each method answers :meth:`~.base.AttributionMethod.passes` for one sample shape and target
(forward and backward passes of one sample, how many samples run together, what it keeps per
sample). :func:`measure_speed` times one forward (and, for methods that backpropagate, one
forward + backward) pass of the real input at its real shape on the real device, so
:func:`estimate` turns passes into seconds for this network, this case and this machine.
Automatic perturbation settings (``0`` for occlusion's window, KernelSHAP's cubes and samples,
meaningful perturbation's iterations) are chosen from the same timing so that the method fits
:data:`TIME_BUDGET_S`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..memory import gigabytes
from .batching import activation_bytes, fitting_batch

#: Seconds that automatic perturbation settings aim at for the method itself on the device it runs on
#: (segmentation, the sequences' Shapley values and writing come on top).
TIME_BUDGET_S = 150.0
#: The Explain widget asks before starting anything estimated to take longer than this.
CONFIRM_OVER_S = 180.0


@dataclass(frozen=True)
class Passes:
    """The work of a method on one sample shape: passes of one sample, samples per batch, memory kept per sample."""

    forward: int
    backward: int = 0
    batch: int = 1          # samples run through the network together (0: what fits the memory cap)
    maps: int = 0           # input-sized tensors the method keeps per sample of a batch
    extra_bytes: int = 0    # other working memory (coalition matrices, the regression)
    samples: int = 0        # distinct samples a batch can gather (0: every forward pass is one)


def repeated(passes: Sequence[Passes], n: int) -> Passes:
    """``n`` times the passes of each of several methods: the passes added up, the most demanding one's memory."""
    batch = 0 if any(p.batch == 0 for p in passes) else max(p.batch for p in passes)
    samples = 0 if any(p.samples == 0 for p in passes) else max(p.samples for p in passes)
    return Passes(n * sum(p.forward for p in passes), n * sum(p.backward for p in passes), batch,
                  max(p.maps for p in passes), max(p.extra_bytes for p in passes), samples)


@dataclass(frozen=True)
class Speed:
    """One timed pass of one sample at its real shape on its device."""

    forward_seconds: float
    backward_seconds: float       # one backward pass (forward + backward minus forward); 0 when not timed
    activation_bytes: int         # bytes of all module outputs of one forward pass
    sample_bytes: int             # bytes of one input sample
    shape: tuple[int, ...]        # (C, *spatial) of one sample
    device: str = "cpu"


@dataclass(frozen=True)
class Cost:
    """The estimated cost of an explanation: passes, seconds on this device and peak working memory."""

    method: str
    forward: int
    backward: int
    seconds: float
    peak_bytes: int
    shape: tuple[int, ...]        # (C, *spatial) of one pass
    windows: int = 1              # windows (or crops) the passes are repeated over
    parameters: tuple[tuple[str, Any], ...] = ()   # the settings it was estimated for (automatic ones resolved)

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(f"{self.method} + {other.method}", self.forward + other.forward, self.backward + other.backward,
                    self.seconds + other.seconds, max(self.peak_bytes, other.peak_bytes), self.shape,
                    self.windows, self.parameters)

    def times(self, n: int) -> "Cost":
        """The cost of doing this ``n`` times (an ensemble's members)."""
        return Cost(self.method, self.forward * n, self.backward * n, self.seconds * n, self.peak_bytes,
                    self.shape, self.windows * n, self.parameters)

    def sentence(self) -> str:
        """One line: about how long, how many passes of what shape, and the peak working memory."""
        shape = " x ".join(str(s) for s in self.shape)
        where = f" over {self.windows} windows" if self.windows > 1 else ""
        return (f"{self.method}: about {duration(self.seconds)} on this device ({self.forward:,} forward and "
                f"{self.backward:,} backward passes of {shape}{where}; about {gigabytes(self.peak_bytes)} working memory)")

    def record(self) -> dict:
        """The estimate as plain values, for a JSON record."""
        return {"method": self.method, "forward_passes": self.forward, "backward_passes": self.backward,
                "seconds": round(self.seconds, 2), "peak_bytes": int(self.peak_bytes), "pass_shape": list(self.shape),
                "windows": self.windows, "parameters": dict(self.parameters)}


def duration(seconds: float) -> str:
    """``seconds`` as a short human duration ("40 s", "3.5 min", "2.1 h")."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _timed(run) -> float:
    """Seconds of ``run()``, once more when the first was quick (the first call on a new shape sets up kernels)."""
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    if first > 1.0:
        return first
    start = time.perf_counter()
    run()
    return min(first, time.perf_counter() - start)


def measure_speed(network: torch.nn.Module, inputs: torch.Tensor, target: Any, backward: bool) -> Speed:
    """Time one forward pass of ``inputs`` (1, C, *spatial), and one forward + backward when ``backward``."""
    activations = activation_bytes(network, inputs)  # also the warm-up pass at this shape

    def forward():
        with torch.no_grad():
            target.scalars(network(inputs))

    forward_seconds = _timed(forward)
    backward_seconds = 0.0
    if backward:
        def both():
            x = inputs.detach().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(target.scalars(network(x))[:, 0].sum(), x)

        backward_seconds = max(_timed(both) - forward_seconds, 0.0)
    sample = inputs.numel() * inputs.element_size()
    return Speed(forward_seconds, backward_seconds, activations, sample, tuple(inputs.shape[1:]),
                 inputs.device.type)


def method_cost(method: Any, speed: Speed, target: Any, windows: int = 1) -> Cost:
    """The cost of a settled ``method`` on samples of ``speed.shape``, repeated over ``windows`` windows."""
    return passes_cost(method.name, method.passes(speed.shape, target), speed, windows, tuple(method.params.items()))


def passes_cost(name: str, passes: Passes, speed: Speed, windows: int = 1,
                parameters: tuple[tuple[str, Any], ...] = ()) -> Cost:
    """The cost of ``passes`` of samples timed at ``speed``, repeated over ``windows`` windows (a method or a measure)."""
    backward = passes.backward > 0
    batch = passes.batch or fitting_batch(speed.activation_bytes, speed.sample_bytes,
                                          max(passes.samples or passes.forward, 1),
                                          with_gradients=backward, maps_per_sample=passes.maps, device=speed.device)
    per_sample = (2 if backward else 1) * speed.activation_bytes + passes.maps * speed.sample_bytes
    peak = (speed.activation_bytes if backward else 0) + batch * per_sample + passes.extra_bytes
    seconds = windows * (passes.forward * speed.forward_seconds + passes.backward * speed.backward_seconds)
    return Cost(name, windows * passes.forward, windows * passes.backward, seconds, int(peak), speed.shape,
                windows, parameters)


def estimate(method: Any, network: torch.nn.Module, inputs: torch.Tensor, target: Any,
             windows: int = 1, speed: Speed | None = None) -> tuple[Any, Cost]:
    """The method with its automatic settings chosen for this device, and its cost, from one timed pass of ``inputs``."""
    if speed is None:
        speed = measure_speed(network, inputs, target, backward=method.backpropagates)
    settled = method.prepared(network, inputs).settle(speed, target)
    return settled, method_cost(settled, speed, target, windows)
