"""Vanilla gradient (saliency): Simonyan, Vedaldi and Zisserman 2014, arXiv:1312.6034."""

from __future__ import annotations

from .base import GradientMethod, class_gradients, register


@register("saliency")
class Saliency(GradientMethod):
    """Gradient of each class's target scalar w.r.t. the input (signed, like captum ``abs=False``)."""

    signed = True
    windowable = True
    parameters = {}

    def attribute_batch(self, network, inputs, target, progress=None, should_cancel=None):
        """Gradients (B, K_t, C, *spatial): one forward pass, one backward pass per class."""
        return class_gradients(network, inputs, target, progress, should_cancel)
