"""Gradient x input: Shrikumar et al. 2016, arXiv:1605.01713."""

from __future__ import annotations

from .base import GradientMethod, class_gradients, register


@register("gradient_x_input")
class GradientXInput(GradientMethod):
    """Input times the gradient of each class's target scalar (captum ``InputXGradient``)."""

    signed = True
    windowable = True
    parameters = {}

    def attribute_batch(self, network, inputs, target, progress=None, should_cancel=None):
        """Input x gradient (B, K_t, C, *spatial): one forward pass, one backward pass per class."""
        return class_gradients(network, inputs, target, progress, should_cancel) * inputs.unsqueeze(1)
