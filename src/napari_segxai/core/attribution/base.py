"""The attribution method base class, its registry and the typed relevance result."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch

from .. import progress as _progress
from .baselines import make_baseline
from .cost import Passes, Speed, measure_speed
from .batching import CPU_BATCH_CAP, MEMORY_FRACTION, activation_bytes, samples_per_batch  # noqa: F401 (re-exported)
from .targets import Target, listed

_REGISTRY: dict[str, type["AttributionMethod"]] = {}



@dataclass(frozen=True)
class Parameter:
    """A method parameter: its default, a one-line help, and the values it accepts."""

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    auto: bool = False      # 0 means "chosen for the case and the device" (the widget shows it as "auto")

    def check(self, method: str, name: str, value: Any) -> Any:
        """The value converted to the default's type, or ValueError saying what is accepted."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(
                    f"{method}: {name}={value!r} is not accepted; choose one of "
                    f"{', '.join(map(repr, self.choices))}."
                )
            return value
        kind = type(self.default)
        if kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{method}: {name} must be true or false, got {value!r}.")
            return bool(value)
        if kind in (int, float):
            try:
                converted = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"{method}: {name} must be a number, got {value!r}.") from None
            if kind is int and converted != value:
                raise ValueError(f"{method}: {name} must be a whole number, got {value!r}.")
            if self.minimum is not None and converted < self.minimum:
                raise ValueError(f"{method}: {name} must be at least {self.minimum}, got {value!r}.")
            if self.maximum is not None and converted > self.maximum:
                raise ValueError(f"{method}: {name} must be at most {self.maximum}, got {value!r}.")
            return converted
        if kind is str and not isinstance(value, str):
            raise ValueError(f"{method}: {name} must be text, got {value!r}.")
        return value


class AttributionMethod:
    """Base class: explains the scalars of a :class:`Target` in terms of the network's input."""

    name: ClassVar[str] = ""
    signed: ClassVar[bool] = True             # relevance can be negative (diverging colormap)
    gradient_based: ClassVar[bool] = False    # needs autograd through the network
    windowable: ClassVar[bool] = False        # linear in the explained function: adds up over sliding windows
    uses_baseline: ClassVar[bool] = False     # has the baseline / blur_sigma parameters
    backpropagates: ClassVar[bool] = False    # runs backward passes (its cost needs a timed backward)
    auto_parameters: ClassVar[tuple[str, ...]] = ()   # parameters whose 0 means "chosen for this case and device"
    #: Why a map of this method can be zero everywhere for a real target (Relevance.zero_line says it).
    zero_reason: ClassVar[str] = "no relevance reached the input for this target"
    _fixed_baseline: torch.Tensor | None = None
    parameters: ClassVar[Mapping[str, Parameter]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            known = ", ".join(self.parameters) or "none"
            raise ValueError(f"{self.name} has no parameter {unknown[0]!r}; its parameters are: {known}.")
        values = {k: p.default for k, p in self.parameters.items()}
        for key, value in params.items():
            values[key] = self.parameters[key].check(self.name, key, value)
        self.params: dict[str, Any] = values
        self._validate()

    def _validate(self) -> None:
        """Check combinations of parameters (override where needed)."""

    @property
    def channel_resolved(self) -> bool:
        """Whether the relevance has one map per input channel (else one map shared by all)."""
        return True

    def baseline_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """The reference input for ``inputs``: the fixed one if set, else built from the parameters."""
        if self._fixed_baseline is not None:
            if self._fixed_baseline.shape != inputs.shape:
                raise ValueError(f"{self.name}: the fixed baseline {tuple(self._fixed_baseline.shape)} does not match the input {tuple(inputs.shape)}.")
            return self._fixed_baseline
        return make_baseline(inputs, self.params["baseline"], self.params["blur_sigma"])

    def with_baseline(self, baseline: torch.Tensor) -> "AttributionMethod":
        """A copy of this method that uses ``baseline`` as its reference input."""
        if not self.uses_baseline:
            raise ValueError(f"{self.name} has no baseline.")
        method = copy.copy(self)
        method._fixed_baseline = baseline.detach()
        return method

    def for_windows(self, inputs: torch.Tensor) -> Callable[[tuple[slice, ...]], "AttributionMethod"]:
        """The method to run on each window's crop of ``inputs``: whole-grid references made once and cropped."""
        if not self.uses_baseline:
            return lambda window: self
        baseline = self.baseline_of(inputs)  # a global baseline (minimum, blurred) is cropped, not rebuilt
        return lambda window: self.with_baseline(baseline[(slice(None), slice(None)) + tuple(window)])

    def passes(self, shape: tuple[int, ...], target: Target) -> Passes:
        """The passes of one sample (C, *spatial) for ``target``: by default one forward, one backward per class."""
        return Passes(1, len(target.classes) if self.backpropagates else 0)

    def settle(self, speed: Speed, target: Target) -> "AttributionMethod":
        """This method with its automatic parameters chosen for one sample timed at ``speed`` (itself if none)."""
        return self

    def prepared(self, network: torch.nn.Module, inputs: torch.Tensor) -> "AttributionMethod":
        """This method with what it measures of the network on ``inputs`` before its work (a receptive field); itself if nothing."""
        return self

    def settled(self, network: torch.nn.Module, inputs: torch.Tensor, target: Target) -> "AttributionMethod":
        """This method prepared, with its automatic parameters chosen, timing one pass of ``inputs`` when one is left at 0."""
        method = self.prepared(network, inputs)
        if not any(method.params[name] == 0 for name in method.auto_parameters):
            return method
        return method.settle(measure_speed(network, inputs, target, method.backpropagates), target)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def attribute(
        self,
        network: torch.nn.Module,
        inputs: torch.Tensor,
        target: Target,
        progress: _progress.ProgressFn | None = None,
        should_cancel: _progress.CancelFn | None = None,
    ) -> torch.Tensor:
        """Relevance (K_t, C, *spatial) of each target class for the input (1, C, *spatial)."""
        inputs = check_inputs(inputs, target)
        with frozen_parameters(network):
            method = self.settled(network, inputs, target)
            relevance = method._attribute(network, inputs, target, progress, should_cancel)
        return relevance.detach().float()

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        """Method body: inputs (1, C, *spatial) detached; returns (K_t, C or 1, *spatial)."""
        raise NotImplementedError

    def attribute_batch(self, network, inputs, target, progress=None, should_cancel=None) -> torch.Tensor:
        """Relevance (B, K_t, C, *spatial) for a batch of inputs (B, C, *spatial), one sample at a time."""
        results = []
        for b in range(inputs.shape[0]):
            _progress.step(b, inputs.shape[0], progress, should_cancel)
            results.append(self._attribute(network, inputs[b : b + 1], target, None, should_cancel))
        _progress.step(inputs.shape[0], inputs.shape[0], progress, None)
        return torch.stack(results)


def register(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator that adds an attribution method to the registry under ``name``."""

    def decorate(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"Attribution method {name!r} is registered twice.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


#: The method the viewer, the report and the demo explain with unless told otherwise: saliency, the one
#: method that passes model parameter randomisation for the bundled model on every held-out case and
#: class (Spearman 0.29 +- 0.04 once every layer is randomised; gradient x input and integrated
#: gradients 0.99: their maps mostly show the input), with the best precision on necrosis; see
#: benchmarks/RESULTS.md (Trust) and docs/trust.md. A method that fails that check is never the default.
DEFAULT_METHOD = "saliency"


def available_methods() -> tuple[str, ...]:
    """Names of the registered attribution methods, in registration order."""
    return tuple(_REGISTRY)


def method_class(name: str) -> type[AttributionMethod]:
    """The class registered under ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown attribution method {name!r}; choose one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def get_method(name: str, **params: Any) -> AttributionMethod:
    """An instance of the method registered under ``name`` with the given parameters."""
    return method_class(name)(**params)


@dataclass(frozen=True, eq=False)
class Relevance:
    """Per-class relevance maps (K_t, C, *spatial) with what was explained and how."""

    relevance: np.ndarray                 # float32 (K_t, C, *spatial); C == 1 if not channel_resolved
    class_indices: tuple[int, ...]        # output channel of each explained class
    class_names: tuple[str, ...]
    channel_names: tuple[str, ...]        # input channel (modality) of each relevance channel
    method: str
    parameters: Mapping[str, Any]
    signed: bool
    target: Target
    seconds: float
    affine: np.ndarray | None = field(default=None)   # voxel -> world of the grid, when known
    sequences: Any = field(default=None)  # modality_shapley.SequenceValues of these classes and target, when computed
    skipped: tuple[str, ...] = ()         # chosen classes not explained because none of their voxels is predicted
    cost: Any = field(default=None)       # cost.Cost estimated before the work started, when it was

    @property
    def target_description(self) -> str:
        """One line saying what was explained."""
        return self.target.describe()

    @property
    def zero_classes(self) -> tuple[str, ...]:
        """The explained classes whose map is zero everywhere: an answer of the method's rule, said, never hidden."""
        return tuple(name for name, maps in zip(self.class_names, self.relevance) if not np.any(maps))

    def zero_line(self) -> str:
        """The sentence for :attr:`zero_classes` ("" when every map has relevance)."""
        zero = self.zero_classes
        if not zero:
            return ""
        return (f"The {self.method} map of {listed(zero, 'and')} is zero everywhere: {method_class(self.method).zero_reason} "
                f"(an empty overlay is the method's answer; a gradient method such as saliency shows what the "
                f"class depends on)")

    def for_class(self, name_or_index: str | int) -> np.ndarray:
        """The relevance (C, *spatial) of one explained class, by name or output index."""
        if isinstance(name_or_index, str):
            if name_or_index not in self.class_names:
                raise ValueError(f"Class {name_or_index!r} was not explained; explained: {', '.join(self.class_names)}.")
            return self.relevance[self.class_names.index(name_or_index)]
        if name_or_index not in self.class_indices:
            raise ValueError(f"Class {name_or_index} was not explained; explained: {self.class_indices}.")
        return self.relevance[self.class_indices.index(name_or_index)]


def explain(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    target: Target,
    method: str | AttributionMethod = "saliency",
    *,
    class_names: Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    affine: np.ndarray | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
    **params: Any,
) -> Relevance:
    """Run an attribution method (by name or instance) and wrap the result with its metadata."""
    if isinstance(method, str):
        method = get_method(method, **params)
    elif params:
        raise ValueError("Pass parameters either to get_method or to explain, not to both.")
    if channel_names is None:
        channel_names = tuple(f"channel {i}" for i in range(inputs.shape[1]))
    channel_names = tuple(channel_names)
    if len(channel_names) != inputs.shape[1]:
        raise ValueError(f"Got {len(channel_names)} channel names for {inputs.shape[1]} input channels.")
    if class_names is None:
        names = tuple(f"class {c}" for c in target.classes)
    else:
        class_names = tuple(class_names)
        if max(target.classes) >= len(class_names):
            raise ValueError(f"Got {len(class_names)} class names but class index {max(target.classes)} was explained.")
        names = tuple(class_names[c] for c in target.classes)
    start = time.perf_counter()
    relevance = method.attribute(network, inputs, target, progress, should_cancel)
    seconds = time.perf_counter() - start
    if relevance.shape[1] == 1 and inputs.shape[1] != 1:
        channel_names = ("all channels",)
    return Relevance(
        relevance=relevance.cpu().numpy().astype(np.float32, copy=False),
        class_indices=target.classes,
        class_names=names,
        channel_names=channel_names,
        method=method.name,
        parameters=dict(method.params),
        signed=method.signed,
        target=target,
        seconds=seconds,
        affine=None if affine is None else np.array(affine, dtype=np.float64),
    )


def check_inputs(inputs: torch.Tensor, target: Target) -> torch.Tensor:
    """The input as a detached floating tensor (1, C, *spatial) matching the target's grid."""
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"Inputs must be a torch tensor (1, C, *spatial), got {type(inputs).__name__}.")
    if inputs.ndim < 3 or inputs.shape[0] != 1:
        raise ValueError(f"Inputs must have shape (1, C, *spatial) (one case), got {tuple(inputs.shape)}.")
    if tuple(inputs.shape[2:]) != target.spatial_shape:
        raise ValueError(
            f"The input's spatial shape {tuple(inputs.shape[2:])} differs from the target's "
            f"{target.spatial_shape}; build the target on the input's grid."
        )
    inputs = inputs.detach()
    return inputs if inputs.is_floating_point() else inputs.float()


@contextlib.contextmanager
def frozen_parameters(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Turn off parameter gradients (only input gradients are needed) and restore them after."""
    saved = [(p, p.requires_grad) for p in network.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield network
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def class_gradients(
    network: torch.nn.Module,
    inputs: torch.Tensor,
    target: Target,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
) -> torch.Tensor:
    """Gradients (B, K_t, C, *spatial) of each target scalar w.r.t. a batch of inputs (B, C, *spatial).

    One forward pass, then one backward pass per class on the retained graph (on the CPU about as
    fast as one batched vector-Jacobian product with ``is_grads_batched``, ``benchmarks/attribution.py
    --parts loop``; the loop lets progress and cancel act between classes). Samples of a
    batch do not interact in an eval-mode network, so the gradient of the batch sum is the
    per-sample gradient.
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        scalars = target.scalars(network(x))
        grads = []
        n = len(target.classes)
        for k in range(n):
            _progress.step(k, n, progress, should_cancel)
            (grad,) = torch.autograd.grad(scalars[:, k].sum(), x, retain_graph=k < n - 1)
            grads.append(grad)
    _progress.step(n, n, progress, None)
    return torch.stack(grads, dim=1)


class GradientMethod(AttributionMethod):
    """A method computed from input gradients; it runs a whole batch of inputs in one pass."""

    gradient_based = True
    backpropagates = True

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        return self.attribute_batch(network, inputs, target, progress, should_cancel)[0]

    def attribute_batch(self, network, inputs, target, progress=None, should_cancel=None) -> torch.Tensor:
        """Relevance (B, K_t, C, *spatial) for a batch of inputs (B, C, *spatial) in one pass."""
        raise NotImplementedError
