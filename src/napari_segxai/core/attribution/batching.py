"""How many perturbed copies of an input to run through the network at once, from the memory free now."""

from __future__ import annotations

from typing import Any

import torch

from ..memory import available_memory
from ._hooks import forward_with_hooks

# Perturbed copies run together use at most this share of free memory, and on CPU at most
# CPU_BATCH_CAP bytes in all (as fitting_batch costs a batch): on CPU a batch runs slower per copy
# once its activations outgrow the caches. `benchmarks/batch_size.py` (demo UNet, 2-core EPYC,
# RESULTS.md "Batch size on the CPU"): forward passes were fastest at 8-16 copies of 32^3, 8 of
# 48^3 and 2-8 of 64^3, and 64 copies ran 1.6-2.0x slower per copy; the cap picks 40 / 12 / 5.
# Built networks run one copy on oneDNN (model/lone_copy.py), where a lone forward pass is about as
# fast per copy as two, and faster on the full-size case's 96 x 128 x 128 crop. With input gradients
# (RESULTS.md "Batches with gradients") a lone copy ran at about half the speed per copy of two from
# 32^3 to 64^3 and at 0.8-0.9x at 80^3 and 96^3, so the cap never cuts such a CPU batch below
# CPU_FEWEST_COPIES where the memory holds them; but once one copy's activations outgrow the cap
# (96 x 128 x 128) one copy ran as fast per copy as two or faster (1.0-1.5x in two runs) and
# 1.2-1.7x faster than three, so there the floor is one. GPUs gain from filling their memory.
MEMORY_FRACTION = 0.5
CPU_BATCH_CAP = 256_000_000
CPU_FEWEST_COPIES = 2


def activation_bytes(network: torch.nn.Module, sample: torch.Tensor) -> int:
    """Bytes of all module outputs in one forward pass of one sample (a proxy for autograd's memory)."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()

    # TorchScript modules take no hooks: a scripted network's outputs are not counted (the sample is the floor).
    leaves = [m for m in network.modules() if not list(m.children()) and not isinstance(m, torch.jit.ScriptModule)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    forward_with_hooks(network, sample, handles)
    return max(total, sample.numel() * sample.element_size())


def samples_per_batch(
    network: torch.nn.Module,
    sample: torch.Tensor,
    n_samples: int,
    requested: int = 0,
    with_gradients: bool = True,
    maps_per_sample: int = 0,
) -> int:
    """How many perturbed copies of ``sample`` to run at once: ``requested``, else what fits the memory cap.

    With A the bytes of all module outputs of one forward pass of one copy, a batch of B copies is
    costed at A + B * (2 A + ``maps_per_sample`` input-sized tensors) when gradients are needed,
    else B * A (plus the maps). Measured on the demo UNet at 4 x 120 x 120 x 80 with 3 classes:
    1.6 A per extra copy besides its gradient maps and 0.5-0.8 A more for the first, so the
    estimate is safe by about a quarter. ``maps_per_sample`` counts what the method itself keeps
    per copy (the perturbed input, the per-class gradients and products of them).
    """
    if requested > 0:
        return max(1, min(int(requested), n_samples))
    return fitting_batch(activation_bytes(network, sample), sample.numel() * sample.element_size(), n_samples,
                         with_gradients=with_gradients, maps_per_sample=maps_per_sample, device=sample.device)


def fitting_batch(activations: int, sample_bytes: int, n_samples: int, *, with_gradients: bool = True,
                  maps_per_sample: int = 0, device: Any = "cpu") -> int:
    """Copies per batch under the memory cap, for copies whose forward pass outputs ``activations`` bytes."""
    maps = maps_per_sample * sample_bytes
    fixed = activations if with_gradients else 0
    per_sample = (2 if with_gradients else 1) * activations + maps
    device = torch.device(device)
    count = int((available_memory(device) * MEMORY_FRACTION - fixed) // per_sample)
    if device.type == "cpu":
        floor = CPU_FEWEST_COPIES if with_gradients and activations <= CPU_BATCH_CAP else 1
        count = min(count, max(floor, int((CPU_BATCH_CAP - fixed) // per_sample)))
    return max(1, min(n_samples, count))
