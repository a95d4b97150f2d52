"""Keep triton out of the napari process: loading it after the viewer's OpenGL context crashes Python.

Under software OpenGL (Mesa llvmpipe, as in Xvfb or a remote desktop) the GL driver has loaded
LLVM; triton's own LLVM then segfaults on import. torch imports triton lazily (torchvision ->
torch._dynamo -> ``has_triton_package``) the first time a MONAI network module is imported, so
opening a widget after the viewer is up killed napari. Marking triton absent makes torch fall
back to its no-triton path; only ``torch.compile``'s GPU kernels need triton, and nothing here
compiles. Seen with torch 2.14, triton 3.x, napari 0.9 under Xvfb.
"""

from __future__ import annotations

import sys


def keep_triton_out() -> bool:
    """Mark triton as not installed unless it is already loaded; True when this call marked it."""
    if "triton" in sys.modules:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import triton now raises ImportError
    return True
