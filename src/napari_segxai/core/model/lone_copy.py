"""Convolutions of a lone input on the CPU through oneDNN, as a batch would run them.

torch picks a kernel per convolution call. Its rule (``use_mkldnn`` in ATen's
``ConvUtils.h``) sends a float32 CPU convolution to oneDNN only when the batch holds more than
one input, the kernel is larger than 3x3 in its last two axes, the groups are several, or
batch x channels x the first two spatial sizes exceeds 20480 voxels; otherwise it runs torch's
native kernels (``slow_conv3d_forward``). The rule was made for 2D images: the convolutions of a
small 3D network on one window fall on the native side, 2.3-6x slower per input than a batch of
two (``benchmarks/batch_size.py``, RESULTS.md "Batch size on the CPU"). Segmentation with one
window per batch and relevance computed window by window run one input at a time.

:func:`prefer_onednn` gives each ``Conv2d`` / ``Conv3d`` of a network a ``_conv_forward`` that
sends those calls to oneDNN where oneDNN was measured faster (``benchmarks/lone_copy.py --parts
layers``, RESULTS.md): without gradients it calls ``mkldnn_convolution`` directly; when autograd
records the call it runs the input beside a copy of itself (a batch of two, which torch sends to
oneDNN forward and backward) and keeps the first output, because torch's backward of a direct
oneDNN call goes back to the native kernels. Small calls (under :data:`FEWEST_OUTPUT_VOXELS`),
1x1 kernels, and strided calls with gradients stay on the native kernels, which were as fast or
faster there. Every other call runs as before. The
outputs and gradients equal torch's to float32 rounding (``tests/test_lone_copy.py``); hooks on the
module see the lone input and output as before. Speed: ``benchmarks/lone_copy.py``.
"""

from __future__ import annotations

import math

import torch

#: batch x channels x first two spatial sizes above which torch already uses oneDNN (ATen's rule).
NATIVE_LIMIT = 20480
#: Output voxels (input voxels over the stride) below which a call stays on torch's native kernels:
#: each 3x3x3 call of the demo UNet with 12^3 = 1,728 or more gained from oneDNN (forward, and stride 1
#: with gradients), while at 8^3 = 512 and fewer the pair lost or tied (``lone_copy.py --parts layers``).
FEWEST_OUTPUT_VOXELS = 1728


class LoneCopyConvolution:
    """A ``Conv2d`` / ``Conv3d``'s ``_conv_forward`` that runs a lone float32 CPU input on oneDNN."""

    def __init__(self, conv: torch.nn.Module):
        self.conv = conv

    def __call__(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        conv = self.conv
        run = type(conv)._conv_forward
        if not _native_would_run(conv, input, weight):   # first: most calls of a batch end here
            return run(conv, input, weight, bias)
        recorded = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
        if not _onednn_pays(conv, input, weight, recorded):
            return run(conv, input, weight, bias)
        if recorded or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return run(conv, torch.cat([input, input]), weight, bias)[:1]
        return torch.ops.aten.mkldnn_convolution(input, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)


def _native_would_run(conv: torch.nn.Module, input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether torch would run this call on its native kernels where oneDNN could (ATen's ``use_mkldnn``)."""
    if input.shape[0] != 1 or input.device.type != "cpu" or input.dtype != torch.float32 or input.is_mkldnn:
        return False
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    large_kernel = weight.shape[-1] > 3 and weight.shape[-2] > 3
    return conv.groups == 1 and not large_kernel and math.prod(input.shape[:4]) <= NATIVE_LIMIT


def _onednn_pays(conv: torch.nn.Module, input: torch.Tensor, weight: torch.Tensor, recorded: bool) -> bool:
    """Whether oneDNN (with gradients: the pair) ran this kind of call faster than the native kernels."""
    if all(k == 1 for k in weight.shape[2:]):
        return False   # 1x1 kernels: native 1.6-4.5x faster, with and without gradients
    strided = any(s != 1 for s in conv.stride)
    if recorded and strided:
        return False   # the pair lost on every strided call measured, up to 64^3 inputs
    return math.prod(input.shape[2:]) / math.prod(conv.stride) >= FEWEST_OUTPUT_VOXELS


def prefer_onednn(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` with every ``Conv2d`` / ``Conv3d`` running a lone CPU input on oneDNN (in place; returned)."""
    for module in network.modules():
        if type(module) in (torch.nn.Conv2d, torch.nn.Conv3d) and "_conv_forward" not in vars(module):
            module._conv_forward = LoneCopyConvolution(module)
    return network


def torch_kernels(network: torch.nn.Module) -> torch.nn.Module:
    """``network`` back on torch's own kernel choice (undoes :func:`prefer_onednn`, in place; returned)."""
    for module in network.modules():
        if isinstance(vars(module).get("_conv_forward"), LoneCopyConvolution):
            del module._conv_forward
    return network
