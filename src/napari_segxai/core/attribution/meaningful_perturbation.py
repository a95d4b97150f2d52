"""Meaningful perturbation: Fong and Vedaldi 2017, arXiv:1704.03296 (the deletion game)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .. import progress as _progress
from .base import AttributionMethod, Parameter, register, samples_per_batch
from .baselines import make_baseline
from .cost import TIME_BUDGET_S, Passes

DELETIONS = ("blurred", "zeros", "minimum", "noise")
#: Input-sized tensors a class's pass keeps: its upsampled mask, the blended input, their gradients.
MAPS = 4
#: The fewest and most gradient steps automatic settings choose (the paper's optimisation converges within 100).
AUTO_ITERATIONS = (20, 100)


def total_variation(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean of |finite difference|^beta along every spatial axis, per mask (N,)."""
    total = mask.new_zeros(mask.shape[0])
    for axis in range(2, mask.ndim):
        if mask.shape[axis] > 1:
            total = total + mask.diff(dim=axis).abs().pow(beta).flatten(1).mean(1)
    return total


@register("meaningful_perturbation")
class MeaningfulPerturbation(AttributionMethod):
    """A smooth, small deletion mask learned by gradient descent so that the class's probability in its region drops.

    Per class, a mask m in [0, 1] (at 1/``mask_scale`` resolution, upsampled linearly) blends
    the input with a deleted version: x~ = m x + (1 - m) d. It minimises
    ``l1`` mean(1 - m) + ``tv`` TV(m)^beta + mean over the target region of p_c(x~), with
    Adam from m = 0.5 (from m = 1 a confident class's probability is saturated and the mask
    never moves), projecting m onto [0, 1] after each step. The score is the class probability (bounded,
    as in the paper) whatever the target's output space. Relevance is 1 - m: what had to be
    deleted. All classes' masks take one step per iteration, their forward and backward passes
    batched as the memory and the device's measured speed per copy allow (on the CPU a large input's
    classes run one at a time, see ``batching``).
    """

    signed = False
    parameters = {
        "iterations": Parameter(0, f"gradient steps on the mask; 0: as many as fit about {TIME_BUDGET_S:.0f} s on "
                                f"this device, {AUTO_ITERATIONS[0]} to {AUTO_ITERATIONS[1]}", minimum=0, auto=True),
        "learning_rate": Parameter(0.1, "Adam learning rate", minimum=0.0),
        "l1": Parameter(1.0, "weight of the deleted fraction mean(1 - m) (1: deleting all costs a full score)",
                        minimum=0.0),
        "tv": Parameter(0.2, "weight of the total variation of the mask", minimum=0.0),
        "tv_beta": Parameter(3.0, "exponent of the total variation", minimum=1.0),
        "mask_scale": Parameter(4, "the mask is this many times coarser than the input", minimum=1),
        "deletion": Parameter("blurred", "what deleted voxels become", choices=DELETIONS),
        "blur_sigma": Parameter(5.0, "Gaussian sigma in voxels of the blurred deletion", minimum=0.0),
        "per_channel": Parameter(True, "one mask per input channel (one map per channel)"),
        "seed": Parameter(0, "seed of the noise deletion", minimum=0),
    }

    backpropagates = True
    auto_parameters = ("iterations",)

    @property
    def channel_resolved(self) -> bool:
        return self.params["per_channel"]

    def settle(self, speed, target) -> "MeaningfulPerturbation":
        """Iterations: as many as fit the time budget (one forward and backward pass per class each), within AUTO_ITERATIONS."""
        if self.params["iterations"]:
            return self
        each = len(target.classes) * (speed.forward_seconds + speed.backward_seconds)
        low, high = AUTO_ITERATIONS
        iterations = int(min(max(TIME_BUDGET_S / max(each, 1e-9), low), high))
        return type(self)(**{**self.params, "iterations": iterations})

    def passes(self, shape, target) -> Passes:
        """Per iteration one forward and one backward pass of every class's blended input, classes batched."""
        n = len(target.classes)
        return Passes(n * self.params["iterations"], n * self.params["iterations"], batch=0, maps=MAPS, samples=n)

    def deleted(self, inputs: torch.Tensor) -> torch.Tensor:
        """The fully deleted input d."""
        kind = self.params["deletion"]
        if kind != "noise":
            return make_baseline(inputs, kind, self.params["blur_sigma"])
        flat = inputs.transpose(0, 1).flatten(1)
        view = (1, -1) + (1,) * (inputs.ndim - 2)
        generator = torch.Generator(device=inputs.device).manual_seed(self.params["seed"])
        noise = torch.randn(inputs.shape, generator=generator, device=inputs.device, dtype=inputs.dtype)
        return flat.mean(1).view(view) + flat.std(1).view(view) * noise

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        p = self.params
        spatial = tuple(inputs.shape[2:])
        n = len(target.classes)
        groups = inputs.shape[1] if p["per_channel"] else 1
        coarse = tuple(max(1, -(-s // p["mask_scale"])) for s in spatial)
        score_target = dataclasses.replace(target, output="probabilities")
        counts = torch.tensor(target.voxel_counts, dtype=inputs.dtype, device=inputs.device)
        deleted = self.deleted(inputs)
        kept = inputs - deleted
        upsample_mask = LinearUpsampler(coarse, spatial, inputs)
        mask = torch.full((n, groups) + coarse, 0.5, dtype=inputs.dtype, device=inputs.device, requires_grad=True)
        optimiser = torch.optim.Adam([mask], lr=p["learning_rate"])
        batch = samples_per_batch(network, inputs, n, with_gradients=True, maps_per_sample=MAPS)
        parts = [torch.arange(start, min(start + batch, n), device=inputs.device) for start in range(0, n, batch)]
        for step in range(p["iterations"]):
            _progress.step(step, p["iterations"], progress, should_cancel)
            optimiser.zero_grad()
            for rows in parts:   # each class's loss depends on its own mask only: gradients add up per part
                with torch.enable_grad():
                    part = mask[rows]
                    blended = deleted + upsample_mask(part) * kept          # m x + (1 - m) d, (b, C, *spatial)
                    scores = score_target.scalars(network(blended))[rows - rows[0], rows] / counts[rows]
                    loss = (p["l1"] * (1 - part).flatten(1).mean(1) + p["tv"] * total_variation(part, p["tv_beta"])
                            + scores)
                    loss.sum().backward()
            optimiser.step()
            with torch.no_grad():
                mask.clamp_(0.0, 1.0)
        _progress.step(p["iterations"], p["iterations"], progress, None)
        return 1 - upsample_mask(mask.detach())


class LinearUpsampler:
    """Coarse masks (N, G, *coarse) onto the input grid by linear interpolation, one matrix product per axis.

    Linear (bi-, trilinear) interpolation is separable, so this equals ``F.interpolate`` with
    ``align_corners=False`` up to rounding; its backward pass is matrix products too, where torch's
    backward of a 3D interpolation scatters every output voxel's gradient. Convex weights: the mask
    stays in [0, 1] (a clamp would block gradients at 1). Axes whose size does not change are left as they are.
    """

    def __init__(self, coarse: tuple[int, ...], size: tuple[int, ...], like: torch.Tensor):
        self.matrices = {}
        for axis, (c, s) in enumerate(zip(coarse, size)):
            if c != s:
                identity = torch.eye(c, dtype=like.dtype, device=like.device).unsqueeze(1)
                self.matrices[axis + 2] = F.interpolate(identity, size=s, mode="linear", align_corners=False)[:, 0]

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        for axis, matrix in self.matrices.items():   # (coarse, size) each
            mask = (mask.movedim(axis, -1) @ matrix).movedim(-1, axis)
        return mask
