"""How much memory is free, and refusing work that would not fit in it before allocating anything."""

from __future__ import annotations

import os
from typing import Any


def available_ram() -> int:
    """Bytes of RAM the operating system can give this process now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 * 1024**3


def available_memory(device: Any = None) -> int:
    """Bytes free on a torch ``device`` now: free GPU memory for CUDA, else the RAM :func:`available_ram` gives."""
    if getattr(device, "type", None) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return available_ram()


def gigabytes(n_bytes: float) -> str:
    """``n_bytes`` as a short decimal-gigabyte string ("3.2 GB", "0.05 GB")."""
    value = n_bytes / 1e9
    return f"{value:.3g} GB" if value < 10 else f"{value:,.0f} GB"


def refuse_if_too_large(needed: int, what: str, hint: str, device: Any = None) -> None:
    """Raise ValueError when ``what`` needs more memory than ``device`` (default: RAM) has free now.

    Called before allocating, so work that cannot fit is refused instead of killed by the OS.
    """
    available = available_memory(device)
    if needed > available:
        raise ValueError(
            f"{what} needs about {gigabytes(needed)} of memory but only {gigabytes(available)} is "
            f"available; {hint}."
        )


def resident_bytes() -> int:
    """Bytes of this process resident in RAM now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class HeapCeiling:
    """Give the freed heap back to the system only once the resident memory outgrows a ceiling.

    A loop of forward passes reuses the blocks the allocator kept from the pass before; giving them
    back after every pass (:func:`return_freed_memory`) makes the next pass fault every page in
    again (KernelSHAP on the full-size case took 1.42x as long that way: RESULTS.md). Trimming only
    when the process holds more than ``allowance`` bytes over what it held at the start keeps the
    memory bounded by the work's own peak without that cost. Without an allowance the ceiling is
    what the process holds at the first check (after the first of equal batches).
    """

    def __init__(self, allowance: int | None = None):
        self.ceiling = None if allowance is None else resident_bytes() + int(allowance)

    def check(self) -> None:
        """Return the freed heap if the resident memory is over the ceiling."""
        if self.ceiling is None:
            self.ceiling = resident_bytes()
        elif resident_bytes() > self.ceiling:
            return_freed_memory()


def return_freed_memory() -> None:
    """Give the heap's freed pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps freed blocks under its mmap threshold (at most 32 MB) in its arenas: a loop of
    forward passes whose tensors are just under it (one masked copy of a 4 x 128^3 crop through a
    UNet) grows the resident memory with every pass without this.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # another C library (musl)
        pass
