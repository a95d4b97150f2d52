"""Deconvolution (DeconvNet): Zeiler and Fergus 2014, arXiv:1311.2901."""

from __future__ import annotations

from ._hooks import rectified_backward
from .base import GradientMethod, class_gradients, register


@register("deconvolution")
class Deconvolution(GradientMethod):
    """Backward pass where each activation passes the positive part of its output gradient, whatever its input."""

    signed = True
    windowable = True
    parameters = {}
    zero_reason = ("on every path back some rectifier's output gradient was negative, and deconvolution passes "
                   "only positive ones")

    def attribute_batch(self, network, inputs, target, progress=None, should_cancel=None):
        """Deconvolution maps (B, K_t, C, *spatial): one forward pass, one backward pass per class."""
        with rectified_backward(network, "deconvolution"):
            return class_gradients(network, inputs, target, progress, should_cancel)
