"""Which torch device runs the network, and its mixed precision."""

from __future__ import annotations

import contextlib
from typing import Union

import torch


def pick_device(requested: Union[str, torch.device, None] = None) -> torch.device:
    """The requested torch device, or CUDA, then MPS, then CPU when none (or "auto") is asked for."""
    if requested is None or str(requested) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Device {requested!r} is not a torch device; use cpu, cuda, cuda:N or mps.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"CUDA device {device.index} was requested but only {torch.cuda.device_count()} exist.")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("MPS was requested but is not available here; use --device cpu or auto.")
    return device


def autocast(device: torch.device):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
