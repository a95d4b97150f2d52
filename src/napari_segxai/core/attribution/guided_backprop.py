"""Guided backpropagation: Springenberg et al. 2015, arXiv:1412.6806."""

from __future__ import annotations

from ._hooks import rectified_backward
from .base import GradientMethod, class_gradients, register


@register("guided_backprop")
class GuidedBackprop(GradientMethod):
    """Gradient with only positive gradients passed back through every activation (any rectifier, not only ReLU)."""

    signed = True
    windowable = True
    parameters = {}
    zero_reason = ("on every path back some rectifier's gradient was negative, and guided backpropagation passes "
                   "only positive gradients")

    def attribute_batch(self, network, inputs, target, progress=None, should_cancel=None):
        """Guided gradients (B, K_t, C, *spatial): one forward pass, one backward pass per class."""
        with rectified_backward(network, "guided"):
            return class_gradients(network, inputs, target, progress, should_cancel)
