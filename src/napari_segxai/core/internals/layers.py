"""The layer tree of a network (names, module types, output shapes) and the outputs of chosen layers.

Output shapes come from one forward pass of a probe through forward hooks that are removed on exit,
whatever happens. A TorchScript network (a ``.ts`` bundle) takes no Python hooks: its tree lists its
modules without output shapes, and its layers' outputs cannot be recorded.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ..attribution._hooks import no_inplace


@dataclass(frozen=True)
class LayerInfo:
    """One module of a network: its dotted name, type, depth in the tree and output shape on the probe."""

    name: str
    kind: str
    depth: int
    output_shape: Optional[tuple[int, ...]]  # (B, C, *spatial) on the probe; None where no hook could see it
    parameters: int
    leaf: bool

    @property
    def channels(self) -> Optional[int]:
        """Output channels on the probe (None when unknown)."""
        return None if self.output_shape is None or len(self.output_shape) < 2 else int(self.output_shape[1])

    def describe(self) -> str:
        """One line: name, type and output shape."""
        shape = "?" if self.output_shape is None else " x ".join(str(s) for s in self.output_shape[1:])
        return f"{'  ' * self.depth}{self.name} ({self.kind}): {shape}"


def is_scripted(network: nn.Module) -> bool:
    """Whether ``network`` is a TorchScript module (no Python hooks can be registered on it)."""
    return isinstance(network, torch.jit.ScriptModule)


def _first_tensor(output) -> Optional[torch.Tensor]:
    """The tensor a module returned (the first one of a tuple or list: a deep-supervision network's full-size head)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def named_layers(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every named module of ``network`` except the root, in definition order."""
    return [(name, module) for name, module in network.named_modules() if name]


def find_layer(network: nn.Module, name: str) -> nn.Module:
    """The module called ``name``; a ValueError naming the closest names when there is none."""
    modules = dict(named_layers(network))
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"The network has no layer called {name!r}.{hint} List its layers with 'segxai inspect CASE --list-layers' "
        "(or pick one in the Network internals widget) and give one of those names."
    )


@contextlib.contextmanager
def recording(network: nn.Module, names: Sequence[str], *, detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the layers called ``names`` into a dict (name -> tensor) on every forward pass.

    The hooks and the switched-off in-place flags are undone on exit, even after an error.
    ``detach=False`` keeps the autograd graph (activation maximisation of a channel).
    """
    if is_scripted(network):
        raise ValueError("This network is a TorchScript archive, which takes no hooks, so its layers' outputs "
                         "cannot be recorded; use a card over the network's Python class (or its nnU-Net folder).")
    modules = [(name, find_layer(network, name)) for name in names]
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            tensor = _first_tensor(output)
            if tensor is not None:
                outputs[name] = tensor.detach() if detach else tensor
        return hook

    handles = []
    with no_inplace(network):
        try:
            for name, module in modules:
                handles.append(module.register_forward_hook(hook_for(name)))
            yield outputs
        finally:
            for handle in handles:
                handle.remove()


def layer_tree(network: nn.Module, probe: torch.Tensor) -> tuple[LayerInfo, ...]:
    """Every module of ``network`` with its output shape on one forward pass of ``probe`` (no gradients)."""
    layers = named_layers(network)
    shapes: dict[str, tuple[int, ...]] = {}
    if not is_scripted(network):
        hookable = [name for name, module in layers if not is_scripted(module)]
        with recording(network, hookable) as outputs, torch.no_grad():
            network(probe)
        shapes = {name: tuple(int(s) for s in tensor.shape) for name, tensor in outputs.items()}
    return tuple(
        LayerInfo(name=name, kind=type(module).__name__ if not is_scripted(module) else module.original_name,
                  depth=name.count("."), output_shape=shapes.get(name),
                  parameters=sum(p.numel() for p in module.parameters()), leaf=not list(module.children()))
        for name, module in layers
    )


def feature_layers(tree: Sequence[LayerInfo], n_spatial: int) -> tuple[LayerInfo, ...]:
    """The layers whose output is a feature map (B, C, *spatial) on the probe: those worth showing as volumes."""
    return tuple(layer for layer in tree if layer.output_shape is not None and len(layer.output_shape) == 2 + n_spatial)


def layer_output_shapes(network: nn.Module, names: Sequence[str], probe: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of each named layer's output on one forward pass of ``probe`` (no gradients)."""
    with recording(network, list(names)) as outputs, torch.no_grad():
        network(probe)
    missing = [name for name in names if name not in outputs]
    if missing:
        raise ValueError(f"Layer {missing[0]!r} was not run by the network's forward pass (an unused module); "
                         "choose a layer the network computes.")
    return {name: tuple(int(s) for s in outputs[name].shape) for name in names}
