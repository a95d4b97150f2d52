"""napari writers: image and labels layers -> NIfTI with the layer's world affine; labels of a DICOM study -> DICOM SEG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error

from ._layers import Key, Role, world_affine

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _nifti_path(path: str) -> Path:
    """``path`` with a NIfTI extension (``.nii.gz`` added when it has none)."""
    target = Path(path)
    if not target.name.lower().endswith(NIFTI_SUFFIXES):
        target = target.with_name(target.name + ".nii.gz")
    return target


def _protected(meta: dict[str, Any]) -> list[Path]:
    """The files the layer's case was loaded from: never overwritten."""
    return [Path(p) for p in (meta.get("metadata") or {}).get(Key.SOURCE_PATHS, [])]


def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save ``data`` at ``path`` with the world affine from the layer state ``meta``."""
    from .core.io.nifti import save_nifti

    array = np.asarray(data)
    if array.ndim != 3:
        raise ValueError(
            f"Only 3D layers can be saved as NIfTI here; this one has {array.ndim} dimensions."
        )
    affine = world_affine(meta, array.ndim)
    target = _nifti_path(path)
    if target.parent.is_file():
        raise ValueError(f"{target.parent} is a file, not a folder; save into a folder.")
    try:
        written = save_nifti(array, affine, target, protected=_protected(meta))
    except OSError as err:  # a read-only or missing folder, a full disk
        raise ValueError(
            f"Cannot write {target} ({err.strerror or err}); choose a folder you can write to."
        ) from None
    return [str(written)]


def _write_or_say_why(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """:func:`_write`, or a notification saying why nothing was written (napari swallows a writer's ValueError)."""
    try:
        return _write(path, data, meta)
    except ValueError as err:
        show_error(str(err))
        return []


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as a NIfTI label volume (smallest integer type) with the layer's affine."""
    return _write_or_say_why(path, data, meta)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an image layer as a float32 NIfTI volume with the layer's affine."""
    return _write_or_say_why(path, np.asarray(data, dtype=np.float32), meta)


def _dicom_classes(data: np.ndarray, meta: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(value, name, colour) of every label value painted, named from the layer's class features."""
    names: dict[int, str] = {}
    features = meta.get("features")
    if features is not None and "index" in features and "class" in features:
        names = {int(v): str(n) for v, n in zip(features["index"], features["class"])}
    colormap = meta.get("colormap")
    colours = getattr(colormap, "color_dict", None) or {}
    entries = []
    for value in sorted(int(v) for v in np.unique(data) if v != 0):
        colour = colours.get(value)
        rgb = "#808080" if colour is None else [float(c) for c in np.asarray(colour).ravel()[:3]]
        entries.append((value, names.get(value, f"label {value}"), rgb))
    return entries


def _dicom_reference(meta: dict[str, Any], what: str) -> list:
    """The files of the DICOM series the layer's case is on (ValueError when it was not opened from a DICOM study)."""
    reference = (meta.get("metadata") or {}).get(Key.REFERENCE_FILES) or []
    if not reference:
        raise ValueError(f"The layer {meta.get('name', '')!r} does not belong to a case opened from a DICOM study, "
                         f"so a {what} has no images to reference; save it as NIfTI.")
    return reference


def _dcm_path(path: str) -> Path:
    return Path(path) if Path(path).suffix.lower() == ".dcm" else Path(path + ".dcm")


def write_image_dicom(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a relevance layer of a DICOM study as a DICOM Parametric Map (the map as computed, not as shown)."""
    from .core.io.dicom_write import write_parametric_map

    try:
        reference = _dicom_reference(meta, "Parametric Map")
        info = meta.get("metadata") or {}
        result = info.get(Key.RESULT)
        if info.get(Key.ROLE) != Role.RELEVANCE or result is None:
            raise ValueError(f"The layer {meta.get('name', '')!r} is not a relevance map; only relevance layers are "
                             "saved as DICOM Parametric Maps (save images as NIfTI).")
        k = list(result.class_names).index(info[Key.CLASS])
        c = list(result.channel_names).index(info[Key.MODALITY])
        written = write_parametric_map(np.asarray(result.relevance[k, c]), reference, world_affine(meta, 3),
                                       _dcm_path(path), method=result.method,
                                       target=f"class {info[Key.CLASS]}, channel {info[Key.MODALITY]}",
                                       protected=_protected(meta), overwrite=True)
    except (ValueError, OSError) as err:
        show_error(str(err))
        return []
    return [str(written)]


def write_labels_dicom(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer of a DICOM study as a DICOM SEG referencing the study's reference series."""
    from . import __version__
    from .core.io.dicom_write import write_seg

    try:
        array = np.asarray(data)
        reference = _dicom_reference(meta, "DICOM SEG")
        if array.ndim != 3 or array.dtype.kind not in "biu":
            raise ValueError(f"Only 3D label volumes can be saved as DICOM SEG; this one is {array.ndim}D {array.dtype}.")
        target = _dcm_path(path)
        card = (meta.get("metadata") or {}).get(Key.MODEL_CARD)
        written = write_seg(array, _dicom_classes(array, meta), reference, world_affine(meta, 3), target,
                            series_description=f"{meta.get('name', 'segmentation')}"[:64],
                            algorithm_name=Path(card).stem if card else "napari-segxai",
                            algorithm_version=__version__, protected=_protected(meta), overwrite=True)
    except (ValueError, OSError) as err:
        show_error(str(err))
        return []
    return [str(written)]
