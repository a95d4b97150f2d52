"""What a trust check costs, said before it starts: each measure's passes through the network and seconds on this device.

A measure that recomputes maps (model parameter randomisation, max-sensitivity, the maps the metrics
measure) costs what the method costs (:meth:`~..attribution.base.AttributionMethod.passes`); a
measure that perturbs the input (faithfulness, deletion) costs one forward pass per perturbed input
(:meth:`~.quality.QualityMetric.passes`). One timed pass of the problem's crop
(:func:`..attribution.cost.measure_speed`) turns passes into seconds, as for an explanation.
Data randomisation (training twins) is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import reduce
from operator import add
from typing import Any, Sequence

from ..attribution import AttributionMethod
from ..attribution.cost import Cost, Passes, Speed, duration, measure_speed, passes_cost, repeated
from .problem import Problem, as_method, method_label
from .quality import QualitySettings, metric_class
from .randomisation import depths


@dataclass(frozen=True)
class CheckCost:
    """The estimated cost of a trust check: one :class:`~..attribution.cost.Cost` per measure, and their sum."""

    parts: tuple[Cost, ...]
    methods: tuple[str, ...]
    parameters: tuple[tuple[str, Any], ...] = ()   # the measures' settings
    noun = "trust check"

    @property
    def total(self) -> Cost:
        """All measures together (the peak memory is the largest part's)."""
        return replace(reduce(add, self.parts), method=f"trust check of {', '.join(self.methods)}",
                       parameters=self.parameters)

    @property
    def seconds(self) -> float:
        return self.total.seconds

    def sentence(self) -> str:
        """One line: the whole check, then each measure's share of the time."""
        shares = ", ".join(f"{p.method} {duration(p.seconds)}" for p in self.parts)
        return f"{self.total.sentence()}: {shares}"

    def record(self) -> dict:
        """The estimate as plain values, for a JSON record: the whole check and each measure."""
        return {**self.total.record(), "parts": [p.record() for p in self.parts]}


def check_cost(
    problem: Problem,
    methods: Sequence[str | AttributionMethod],
    *,
    metrics: Sequence[str] = (),
    settings: QualitySettings = QualitySettings(),
    modes: Sequence[str] = (),
    max_steps: int | None = None,
    ground_truth: bool = False,
    speed: Speed | None = None,
) -> CheckCost:
    """The cost of randomisation over ``modes``, the quality ``metrics`` and (``ground_truth``) precision, from one timed pass of the crop."""
    chosen = [as_method(m) for m in methods]
    if speed is None:
        speed = measure_speed(problem.network, problem.inputs, problem.target,
                              backward=any(m.backpropagates for m in chosen))
    maps = [m.settle(speed, problem.target).passes(speed.shape, problem.target) for m in chosen]
    n_classes = len(problem.class_names)
    parts: list[Cost] = []

    def part(name: str, passes: Passes) -> None:
        if passes.forward or passes.backward:
            parts.append(passes_cost(name, passes, speed))

    if modes:
        n_layers = sum(any(p.ndim >= 2 for p in module.parameters(recurse=False))
                       for module in problem.network.modules())
        steps = len(modes) * len(depths(max(n_layers, 1), max_steps)) + 1
        part("model parameter randomisation", repeated(maps, steps))
    if metrics:
        part("the maps measured", repeated(maps, 1))
        for name in metrics:
            part(name, metric_class(name)().passes(settings, n_classes, maps))
    if ground_truth:   # the trained and the random-weights network's maps
        part("ground truth", repeated(maps, 2))
    if not parts:
        parts.append(passes_cost("nothing", Passes(0), speed))
    parameters = {"modes": list(modes), "max_steps": max_steps, "metrics": list(metrics), **vars(settings),
                  "ground_truth": ground_truth}
    return CheckCost(tuple(parts), tuple(method_label(m) for m in methods), tuple(parameters.items()))

