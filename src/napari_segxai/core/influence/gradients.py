"""Per-class-region losses and their gradients with respect to chosen layers of a network."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from .regions import IGNORE, RegionExample

LAYER_CHOICES = ("all", "last", "final")
#: Whose gradients count by default: all parameters (sketched; Spearman 0.995 with exact all-parameter TracIn,
#: the last 3 layers 0.83: benchmarks/RESULTS.md).
DEFAULT_LAYERS = "all"
#: How many parametrised layers "last" takes by default.
DEFAULT_LAST_K = 3


def region_loss(logits: torch.Tensor, targets: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Per-example mean loss over each target's region: (B, K, *s) logits, (B, *s) targets -> (B,).

    Softmax models: cross-entropy of the target class; sigmoid models: binary cross-entropy of
    every class against the one-hot target. Voxels marked IGNORE do not count; an empty region
    has loss 0 (and gradient 0).
    """
    inside = targets != IGNORE
    count = inside.flatten(1).sum(1).clamp(min=1).to(logits.dtype)
    if activation == "softmax":
        per_voxel = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")
    elif activation == "sigmoid":
        onehot = F.one_hot(targets.clamp(min=0), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        per_voxel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1) * inside
    else:
        raise ValueError(f"Unknown activation {activation!r}; use softmax or sigmoid.")
    return per_voxel.flatten(1).sum(1) / count


class RegionLoss(torch.nn.Module):
    """:func:`region_loss` as a loss module with per-example output (what captum calls reduction 'none')."""

    reduction = "none"

    def __init__(self, activation: str = "softmax"):
        super().__init__()
        self.activation = activation

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return region_loss(logits, targets, self.activation)


def forward(network: torch.nn.Module, image: torch.Tensor, spatial_dims: int, slice_axis: Optional[int]) -> torch.Tensor:
    """Logits (B, K, *volume) of a 3D network, or of a 2D network applied slice by slice along ``slice_axis``."""
    if spatial_dims == 3:
        output = network(image)
    else:
        axis = 2 + int(slice_axis)
        batch = image.shape[0]
        slices = image.movedim(axis, 1).flatten(0, 1)            # (B*S, C, a, b)
        output = network(slices)
        output = output.unflatten(0, (batch, -1)).movedim(1, axis)
    if isinstance(output, (list, tuple)):
        output = output[0]
    return output


def parametrised_layers(network: torch.nn.Module, probe: Optional[torch.Tensor] = None) -> list[str]:
    """Names of the modules that own parameters, in the order a forward pass of ``probe`` runs them.

    With a probe, modules the forward pass does not run (deep-supervision heads of an nnU-Net network in
    inference) are left out: they get no gradient and hold no feature.
    """
    owners = [name for name, module in network.named_modules() if any(True for _ in module.parameters(recurse=False))]
    if probe is None:
        return owners
    order: list[str] = []
    modules = dict(network.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda m, i, o, name=name: order.append(name) if name not in order else None)
        for name in owners
    ]
    try:
        with torch.no_grad():
            network(probe)
    except Exception:  # a network that cannot run the probe: fall back to registration order
        return owners
    finally:
        for handle in handles:
            handle.remove()
    return order


def select_layers(network: torch.nn.Module, layers: str, *, last_k: int = DEFAULT_LAST_K,
                  probe: Optional[torch.Tensor] = None) -> tuple[str, ...]:
    """The module names whose parameters count: all of them, the last ``last_k`` in execution order, or the final one."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"Unknown layer choice {layers!r}; use one of {', '.join(LAYER_CHOICES)}.")
    ordered = parametrised_layers(network, probe)
    if not ordered:
        raise ValueError("The network has no parameters, so it has no gradients to compare.")
    if layers == "all":
        return tuple(ordered)
    if layers == "final":
        return (ordered[-1],)
    if int(last_k) < 1:
        raise ValueError(f"The number of last layers must be at least 1, got {last_k}.")
    return tuple(ordered[-int(last_k):])


def layer_parameters(network: torch.nn.Module, names: Sequence[str]) -> list[torch.nn.Parameter]:
    """The parameters owned by the named modules, in that order."""
    modules = dict(network.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"The network has no layer named {missing[0]!r}.")
    return [p for name in names for p in modules[name].parameters(recurse=False)]


@contextlib.contextmanager
def only_these_require_grad(network: torch.nn.Module, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
    """Let autograd record only what depends on ``params`` (cheaper when they are the last layers); undone on exit."""
    keep = {id(p) for p in params}
    before = [(p, p.requires_grad) for p in network.parameters()]
    try:
        for p, _ in before:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def example_gradients(network: torch.nn.Module, names: Sequence[str], example: RegionExample, *,
                      activation: str, spatial_dims: int, slice_axis: Optional[int]) -> torch.Tensor:
    """(K, D) gradients of each class region's loss of ``example`` with respect to the named layers' parameters."""
    params = layer_parameters(network, names)
    size = sum(p.numel() for p in params)
    k = example.targets.shape[0]
    out = torch.zeros(k, size, dtype=torch.float32)
    if not example.voxels.any():
        return out
    device = params[0].device
    with only_these_require_grad(network, params), torch.enable_grad():
        logits = forward(network, example.image.to(device), spatial_dims, slice_axis)
        for i in range(k):
            if example.voxels[i] == 0:
                continue
            loss = region_loss(logits, example.targets[i : i + 1].to(device), activation)[0]
            grads = torch.autograd.grad(loss, params, retain_graph=i < k - 1, allow_unused=True)
            out[i] = torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1).float().cpu() for g, p in zip(grads, params)
            ])
    return out
