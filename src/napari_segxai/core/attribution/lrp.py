"""Layer-wise relevance propagation for segmentation (Bach et al. 2015; per-location normalisation as in
Ahmed and Ali 2021, "Explainable medical image segmentation via generative adversarial networks and
layer-wise relevance propagation") with zennit's rules, made to conserve relevance on MONAI networks.

The residual blocks whose sums are split come from each architecture family's file
(:func:`..model.architectures.register_residual_blocks`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .. import progress as _progress
from ..model.architectures import residual_block_forwards
from ._hooks import forward_with_hooks, no_inplace
from .base import AttributionMethod, Parameter, register
from .cost import Passes
from .slicewise import SliceWise

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat")
STARTS = ("normalised", "logit", "ones")
NORMS: tuple[type[nn.Module], ...] = (
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
)


def _zennit():
    """The zennit modules, or ValueError saying how to get them."""
    try:
        import zennit.canonizers
        import zennit.composites
        import zennit.core
        import zennit.layer
        import zennit.rules
        import zennit.types
    except ImportError as error:  # zennit also needs a torchvision that matches torch
        raise ValueError(f"LRP needs the zennit package ({error}); install zennit beside a matching torchvision.") from None
    return zennit


def _residual_canonizer(zennit):
    """A canonizer that routes the residual additions of registered blocks through zennit's Sum (else both branches get all relevance)."""
    forwards = residual_block_forwards()

    def attribute_map(_name, module):
        forward = forwards.get(type(module))
        if forward is None:
            return None
        return {"forward": forward.__get__(module), "canonizer_sum": zennit.layer.Sum()}

    return zennit.canonizers.AttributeCanonizer(attribute_map)


def input_layers(network: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Names of the linear layers that read the network's input (all get the input-layer rule)."""
    zennit = _zennit()
    names: list[str] = []
    handles = []
    received = [inputs]
    if isinstance(network, SliceWise):  # the 2D network reads the slices, a reshaped copy of the input
        handles.append(network.network.register_forward_pre_hook(lambda _m, args: received.append(args[0])))
    for name, module in network.named_modules():
        if isinstance(module, (zennit.types.Convolution, zennit.types.Linear)):
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, name=name: names.append(name) if args and args[0] is received[-1] else None))
    forward_with_hooks(network, inputs, handles)
    return names


def make_composite(network: nn.Module, inputs: torch.Tensor, name: str, epsilon: float, gamma: float, zero_bias: bool):
    """zennit composite: the chosen rules, norm layers passed through, residual sums canonized, every input layer given the input rule."""
    zennit = _zennit()
    rules, types = zennit.rules, zennit.types
    zero = ["bias"] if zero_bias else None

    class NormPass(zennit.core.Hook):
        """Pass relevance through a normalisation layer unchanged (only the input's gradient slot)."""

        def backward(self, module, grad_input, grad_output):
            return (grad_output[0],) + (None,) * (len(grad_input) - 1)

    if name == "epsilon_gamma_box":
        flat = inputs.transpose(0, 1).flatten(1)
        view = (1, -1) + (1,) * (inputs.ndim - 2)
        first = rules.ZBox(low=flat.min(1).values.view(view), high=flat.max(1).values.view(view), zero_params=zero)
        conv = rules.Gamma(gamma=gamma, zero_params=zero)
    elif name == "epsilon_alpha2_beta1_flat":
        first, conv = rules.Flat(zero_params=zero), rules.AlphaBeta(alpha=2.0, beta=1.0, zero_params=zero)
    else:
        first, conv = rules.Flat(zero_params=zero), rules.ZPlus(zero_params=zero)
    layer_map = [(NORMS, NormPass())] + zennit.composites.layer_map_base() + [
        (types.Convolution, conv),
        (types.Linear, rules.Epsilon(epsilon=epsilon, zero_params=zero)),
    ]
    first_names = tuple(input_layers(network, inputs))
    return zennit.composites.MixedComposite(
        [zennit.composites.NameMapComposite([(first_names, first)]), zennit.composites.LayerMapComposite(layer_map)],
        canonizers=[_residual_canonizer(zennit)],
    )


@contextlib.contextmanager
def lrp_context(network: nn.Module, composite) -> Iterator[nn.Module]:
    """The network with zennit's hooks and canonizers, all removed on exit."""
    with no_inplace(network), composite.context(network) as modified:
        yield modified


@register("lrp")
class LRP(AttributionMethod):
    """Relevance of each input voxel, propagated back from the target region with LRP rules (zennit).

    ``start="normalised"``: every voxel a of the region contributes its own relevance map M_a
    divided by its total sum(M_a), so each output voxel counts once, whatever its logit. LRP is
    linear in the starting relevance for a fixed forward pass, so this is one pass started from
    1/s_a on the region, where s_a = sum(M_a) for all voxels at once comes from one double
    backward pass. ``logit`` starts from the class logit on the region (classic LRP), ``ones``
    from 1.
    """

    signed = True
    backpropagates = True
    parameters = {
        "composite": Parameter("epsilon_plus_flat", "rule set: z+ for convolutions and flat for input layers, "
                               "gamma with a z-box input rule, or alpha2-beta1", choices=COMPOSITES),
        "start": Parameter("normalised", "starting relevance on the region", choices=STARTS),
        "epsilon": Parameter(1e-6, "stabiliser of the epsilon rule (fully connected layers)", minimum=0.0),
        "gamma": Parameter(0.25, "gamma of the gamma rule", minimum=0.0),
        "zero_bias": Parameter(False, "leave biases out of the rules (relevance is then conserved)"),
        "guard": Parameter(1e-4, "region voxels whose |s_a| is below this share of the largest are left out "
                           "of the normalised start", minimum=0.0),
    }

    def passes(self, shape, target) -> Passes:
        """One forward pass, one backward per class, and for ``normalised`` a double backward (about three more)."""
        n = len(target.classes)
        return Passes(1, n + (3 if self.params["start"] == "normalised" else 0), maps=n)

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        if target.output != "logits":
            raise ValueError("LRP explains logits; build the target with output_space='logits'.")
        p = self.params
        composite = make_composite(network, inputs, p["composite"], p["epsilon"], p["gamma"], p["zero_bias"])
        n = len(target.classes)
        total = n + (1 if p["start"] == "normalised" else 0)
        maps = []
        with lrp_context(network, composite) as modified, torch.enable_grad():
            x = inputs.clone().requires_grad_(True)
            output = modified(x)
            masks = target._mask_tensor(output.device, output.dtype)
            if p["start"] == "normalised":
                _progress.step(0, total, progress, should_cancel)
                probe = torch.zeros_like(output, requires_grad=True)
                (relevance,) = torch.autograd.grad(output, x, probe, create_graph=True)
                (totals,) = torch.autograd.grad(relevance.sum(), probe, retain_graph=True)
            for k, c in enumerate(target.classes):
                _progress.step(total - n + k, total, progress, should_cancel)
                start = torch.zeros_like(output)
                if p["start"] == "normalised":
                    s = totals[0, c] * masks[k]
                    keep = s.abs() > p["guard"] * s.abs().max()
                    start[0, c] = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
                elif p["start"] == "logit":
                    start[0, c] = output[0, c].detach() * masks[k]
                else:
                    start[0, c] = masks[k]
                (relevance,) = torch.autograd.grad(output, x, start, retain_graph=k < n - 1)
                maps.append(relevance.detach())
        _progress.step(total, total, progress, None)
        return torch.cat(maps)
