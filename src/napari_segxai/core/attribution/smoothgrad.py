"""SmoothGrad: Smilkov et al. 2017, arXiv:1706.03825 (with the SmoothGrad-squared and VarGrad variants)."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from .. import progress as _progress
from .base import AttributionMethod, Parameter, method_class, register, samples_per_batch
from .cost import Passes

VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


@register("smoothgrad")
class SmoothGrad(AttributionMethod):
    """Average of another gradient method over noisy copies of the input (captum ``NoiseTunnel``)."""

    gradient_based = True
    _fixed_noise: torch.Tensor | None = None
    parameters = {
        "base": Parameter("saliency", "gradient method applied to each noisy copy"),
        "n_samples": Parameter(16, "number of noisy copies", minimum=1),
        "sigma": Parameter(0.15, "noise standard deviation as a fraction of each channel's range (max - min)",
                           minimum=0.0),
        "variant": Parameter("smoothgrad", "mean, mean of squares, or variance of the copies' maps",
                             choices=VARIANTS),
        "batch_size": Parameter(0, "noisy copies per forward pass; 0 chooses from free memory", minimum=0),
        "seed": Parameter(0, "seed of the noise (the same seed gives the same map)", minimum=0),
    }

    def _validate(self) -> None:
        base = method_class(self.params["base"])
        if not base.gradient_based or base is SmoothGrad:
            raise ValueError(
                f"smoothgrad: base={self.params['base']!r} is not a gradient method; choose one of "
                f"{', '.join(gradient_methods())}."
            )
        self.base = base()
        self.signed = self.params["variant"] == "smoothgrad" and base.signed
        # the mean of an additive method over noise fixed on the whole grid adds up over windows too
        self.windowable = self.params["variant"] == "smoothgrad" and base.windowable and not base.uses_baseline

    def stdevs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Noise standard deviation per channel (1, C, 1, ...): sigma times the channel's range."""
        flat = inputs.transpose(0, 1).flatten(1)
        span = flat.max(1).values - flat.min(1).values
        return (self.params["sigma"] * span).view(1, -1, *([1] * (inputs.ndim - 2)))

    def noise_of(self, inputs: torch.Tensor) -> torch.Tensor:
        """The noise (n_samples, C, *spatial) of all copies, drawn at once (as ``batch_size >= n_samples`` draws it)."""
        generator = torch.Generator(device=inputs.device).manual_seed(self.params["seed"])
        expanded = self.stdevs(inputs).expand((self.params["n_samples"],) + tuple(inputs.shape[1:])).contiguous()
        return torch.normal(0.0, expanded, generator=generator)

    def for_windows(self, inputs: torch.Tensor) -> Callable[[tuple[slice, ...]], "SmoothGrad"]:
        """The method for each window's crop: the noise drawn once on the whole grid and cropped."""
        noise = self.noise_of(inputs)

        def on_window(window: tuple[slice, ...]) -> "SmoothGrad":
            method = copy.copy(self)
            method._fixed_noise = noise[(slice(None), slice(None)) + tuple(window)]
            return method

        return on_window

    backpropagates = True

    def passes(self, shape, target) -> Passes:
        """The base method's passes for every noisy copy."""
        n, each = self.params["n_samples"], self.base.passes(shape, target)
        return Passes(n * each.forward, n * each.backward, batch=min(self.params["batch_size"], n),
                      maps=2 + 2 * len(target.classes))

    def _attribute(self, network, inputs, target, progress, should_cancel) -> torch.Tensor:
        n = self.params["n_samples"]
        # per noisy copy: its noise, the copy, the base method's class maps and their squares
        batch = samples_per_batch(network, inputs, n, self.params["batch_size"],
                                  maps_per_sample=2 + 2 * len(target.classes))
        fixed = self._fixed_noise
        if fixed is not None and tuple(fixed.shape) != (n,) + tuple(inputs.shape[1:]):
            raise ValueError(f"smoothgrad: the fixed noise {tuple(fixed.shape)} does not match {n} copies of the "
                             f"input {tuple(inputs.shape[1:])}.")
        stdev = self.stdevs(inputs)
        generator = torch.Generator(device=inputs.device).manual_seed(self.params["seed"])
        total = total_sq = None
        done = 0
        while done < n:
            _progress.step(done, n, progress, should_cancel)
            size = min(batch, n - done)
            if fixed is not None:
                noisy = inputs + fixed[done : done + size]
            else:
                expanded = stdev.expand((size,) + tuple(inputs.shape[1:])).contiguous()
                noisy = inputs + torch.normal(0.0, expanded, generator=generator)
            maps = self.base.attribute_batch(network, noisy, target, None, should_cancel)
            part, part_sq = maps.sum(0), (maps * maps).sum(0)
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
            done += size
        _progress.step(n, n, progress, None)
        mean, mean_sq = total / n, total_sq / n
        if self.params["variant"] == "smoothgrad":
            return mean
        if self.params["variant"] == "smoothgrad_sq":
            return mean_sq
        return mean_sq - mean * mean


def gradient_methods() -> tuple[str, ...]:
    """Registered methods SmoothGrad can wrap."""
    from .base import available_methods

    return tuple(m for m in available_methods() if method_class(m).gradient_based and m != "smoothgrad")
