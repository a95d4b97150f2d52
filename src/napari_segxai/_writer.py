"""napari writers: image and labels layers -> NIfTI with the layer's world affine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._layers import world_affine

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _nifti_path(path: str) -> Path:
    """``path`` with a NIfTI extension (``.nii.gz`` added when it has none)."""
    target = Path(path)
    if not target.name.lower().endswith(NIFTI_SUFFIXES):
        target = target.with_name(target.name + ".nii.gz")
    return target


def _protected(meta: dict[str, Any]) -> list[Path]:
    """The files the layer's case was loaded from: never overwritten."""
    return [Path(p) for p in (meta.get("metadata") or {}).get("source_paths", [])]


def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save ``data`` at ``path`` with the world affine from the layer state ``meta``."""
    from .core.case import save_nifti

    array = np.asarray(data)
    if array.ndim != 3:
        raise ValueError(
            f"Only 3D layers can be saved as NIfTI here; this one has {array.ndim} dimensions."
        )
    affine = world_affine(meta, array.ndim)
    written = save_nifti(array, affine, _nifti_path(path), protected=_protected(meta))
    return [str(written)]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as a NIfTI label volume (smallest integer type) with the layer's affine."""
    return _write(path, data, meta)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an image layer as a float32 NIfTI volume with the layer's affine."""
    return _write(path, np.asarray(data, dtype=np.float32), meta)
