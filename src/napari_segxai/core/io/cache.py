"""The user cache folder of napari-segxai: the generator's anatomy and the demo case live there."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder of napari-segxai (``$XDG_CACHE_HOME/napari-segxai``, default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "napari-segxai"
