"""Temporary changes to a network (in-place activations, backward rules, hooks), each undone on exit."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Element-wise activations whose backward pass guided backpropagation and deconvolution rewrite.
RECTIFIERS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Softplus,
)


@contextlib.contextmanager
def no_inplace(network: nn.Module) -> Iterator[nn.Module]:
    """Switch off ``inplace`` on every module that has it (hooks need the unmodified tensors); restore after."""
    changed = [m for m in network.modules() if getattr(m, "inplace", False) is True]
    try:
        for module in changed:
            module.inplace = False
        yield network
    finally:
        for module in changed:
            module.inplace = True


@contextlib.contextmanager
def rectified_backward(network: nn.Module, rule: str) -> Iterator[nn.Module]:
    """Rewrite the backward pass of every rectifier: ``guided`` keeps the positive part of the
    gradient at its input, ``deconvolution`` passes the positive part of the gradient at its output.
    """
    if rule not in ("guided", "deconvolution"):
        raise ValueError(f"Unknown backward rule {rule!r}; choose guided or deconvolution.")

    def guided(_module, grad_input, _grad_output):
        return tuple(None if g is None else F.relu(g) for g in grad_input)

    def deconvolution(_module, grad_input, grad_output):
        return (F.relu(grad_output[0]),) + tuple(grad_input[1:])

    hook = guided if rule == "guided" else deconvolution
    handles = []
    with no_inplace(network):
        try:
            for module in network.modules():
                if isinstance(module, RECTIFIERS):
                    handles.append(module.register_full_backward_hook(hook))
            if not handles:
                raise ValueError(
                    f"The network has no activation module ({', '.join(t.__name__ for t in RECTIFIERS[:4])}, ...) "
                    f"to apply the {rule} rule to; use a plain gradient method."
                )
            yield network
        finally:
            for handle in handles:
                handle.remove()




def forward_with_hooks(network: nn.Module, inputs: torch.Tensor, handles: list) -> None:
    """Run ``network(inputs)`` without gradients so that the hooks behind ``handles`` see it; remove them after."""
    try:
        with torch.no_grad():
            network(inputs)
    finally:
        for handle in handles:
            handle.remove()
