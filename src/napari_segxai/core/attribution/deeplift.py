"""DeepLIFT (Rescale rule): Shrikumar, Greenside and Kundaje 2017, arXiv:1704.02685, via captum."""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator

import torch
from captum.attr import DeepLift as _CaptumDeepLift
from captum.attr._core import deep_lift as _captum_deep_lift
from torch import nn

from .. import progress as _progress
from ._hooks import no_inplace
from .base import AttributionMethod, Parameter, register
from .baselines import BASELINES
from .cost import Passes

# Element-wise activations captum's Rescale rule lacks; its generic rule is exact for them.
EXTRA_RESCALE: tuple[type[nn.Module], ...] = (nn.PReLU, nn.ReLU6, nn.RReLU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish)
_LOCK = threading.Lock()


@contextlib.contextmanager
def rescale_rule_for_all_activations() -> Iterator[None]:
    """Give captum's DeepLIFT its Rescale rule for the activations above too (MONAI nets use PReLU); restore after."""
    table = _captum_deep_lift.SUPPORTED_NON_LINEAR
    with _LOCK:
        added = [kind for kind in EXTRA_RESCALE if kind not in table]
        try:
            for kind in added:
                table[kind] = _captum_deep_lift.nonlinear
            yield
        finally:
            for kind in added:
                table.pop(kind, None)


class _TargetScalars(nn.Module):
    """The network followed by the target's aggregation: input (B, C, *spatial) -> scalars (B, K_t)."""

    def __init__(self, network: nn.Module, target) -> None:
        super().__init__()
        self.network = network
        self.target = target

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.target.scalars(self.network(inputs))

    def apply(self, fn):
        """Call ``fn`` on every module once. ``nn.Module.apply`` walks children and reaches a module held by two
        parents twice (dynamic_network_architectures keeps each non-linearity as ``nonlin`` and inside
        ``all_modules``), which would give captum's DeepLIFT two hooks on it and break its backward pass."""
        for module in self.modules():  # modules() yields each module once
            fn(module)
        return self


@register("deeplift")
class DeepLIFT(AttributionMethod):
    """Contributions of (x - x') to S(x) - S(x'), propagated with the Rescale rule (captum ``DeepLift``).

    Summation-to-delta holds exactly for networks of convolutions, batch norm (eval) and
    element-wise activations. Instance and group normalisation are not element-wise; captum
    passes plain gradients through them, so on such networks (the MONAI UNet default) the
    maps no longer sum to S(x) - S(x').
    """

    signed = True
    windowable = True
    uses_baseline = True
    backpropagates = True
    parameters = {
        "baseline": Parameter("zeros", "reference input", choices=BASELINES),
        "blur_sigma": Parameter(5.0, "Gaussian sigma in voxels of the blurred baseline", minimum=0.0),
    }

    def passes(self, shape, target) -> Passes:
        """Per class, the input and the baseline forward and backward together (captum's DeepLift)."""
        n = len(target.classes)
        return Passes(2 * n, 2 * n, batch=2, maps=2)

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        baseline = self.baseline_of(inputs)
        model = _TargetScalars(network, target)
        n = len(target.classes)
        maps = []
        with no_inplace(network), rescale_rule_for_all_activations(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(require gradients|[Ss]etting forward, backward hooks).*")
            explainer = _CaptumDeepLift(model, multiply_by_inputs=True)
            for k in range(n):
                _progress.step(k, n, progress, should_cancel)
                with torch.enable_grad():
                    maps.append(explainer.attribute(inputs.clone().requires_grad_(True), baselines=baseline, target=k))
        _progress.step(n, n, progress, None)
        return torch.cat(maps)
