"""Open a multimodal MRI case from NIfTI files into a typed :class:`~..case.Case`, and write NIfTI safely.

What :func:`load_case` accepts:

- a folder: one 3D NIfTI per modality, named by any convention :mod:`..naming` knows, plus at
  most one reference label file. Files that name neither a modality nor a label (for instance
  an algorithm's ``pred_*`` or ``fusion_*`` segmentations) are ignored; a folder in which no
  file names a modality is refused with the list of its files. Channels come in the order
  t1, t1ce, t2, flair, then other modalities alphabetically. Hidden files (``.*``, such as
  macOS ``._t1.nii.gz`` or an interrupted write's temporary file) are skipped.
- a single 3D NIfTI: one channel, named from the file (canonical name, else the lowercased stem).
- a single 4D NIfTI (channels last): channels named ``channel0``, ``channel1``, ... in stored
  order, unless the file name ends with exactly that many modality names
  (``case_t1_t1ce_t2_flair.nii.gz``). Trailing axes of length 1 are dropped first, so
  ``(X, Y, Z, 1)`` is 3D and ``(X, Y, Z, 1, C)`` is 4D.

Voxels are kept exactly as stored (no reorientation); the affine is nibabel's ``img.affine``
(sform when its code is set, else qform), so world positions are ``affine @ (i, j, k, 1)``.
Label values map to class names through an explicit table (:data:`..case.LABEL_SCHEMES`), chosen by
:func:`..case.label_scheme_for` from the values present.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import nibabel as nib
import numpy as np

from .. import naming
from ..case import Case, LabelScheme, label_scheme_for
from ..memory import refuse_if_too_large
from .files import atomic_path


#: More voxels than this (4096^3) means a corrupt header; fewer, but more than memory holds, is refused as too large.
MAX_VOXELS = 2**36


GRID_TOLERANCE_MM = 1e-3


# --------------------------------------------------------------------------- reading


def _read_image(path: Path, *, float32_copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The voxel array (trailing length-1 axes dropped) and affine of one NIfTI file.

    Refused before any voxel is read when the file, plus ``float32_copies`` float32 arrays of its
    size that the caller will make, would not fit in the memory available now.
    """
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise ValueError(f"File not found: {path}.") from None
    except Exception as exc:  # nibabel raises many types for a bad header
        raise ValueError(f"Cannot read {path} as NIfTI ({exc}); check that the file is complete.") from None
    shape = tuple(int(s) for s in img.shape)
    n_voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if n_voxels > MAX_VOXELS:
        raise ValueError(
            f"{path} declares {shape} = {n_voxels} voxels, more than {MAX_VOXELS}; the header is "
            f"probably corrupt."
        )
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 5 and shape[3] == 1:
        shape = shape[:3] + shape[4:]
    if len(shape) not in (3, 4):
        raise ValueError(f"{path} is {len(shape)}D with shape {tuple(img.shape)}; give a 3D or 4D NIfTI image.")
    stored = np.dtype(img.get_data_dtype()).itemsize
    buffers = 2 if path.name.lower().endswith(".gz") else 1  # gzip: the decompressed bytes, then the array
    # the stored voxels, the finite-value mask and the caller's float32 copies
    needed = n_voxels * (buffers * stored + 1 + 4 * float32_copies)
    refuse_if_too_large(
        needed, f"{path} ({' x '.join(map(str, shape))} voxels of {img.get_data_dtype()})",
        "crop or downsample the image first, or use a machine with more memory",
    )
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise ValueError(f"Cannot read the voxels of {path} ({exc}); the file is truncated or corrupt.") from None
    data = np.asarray(data).reshape(shape)
    if data.dtype.kind not in "buif":
        raise ValueError(f"{path} stores {data.dtype} voxels (colour or complex); give a greyscale NIfTI image.")
    return data, np.asarray(img.affine, dtype=np.float64)


def _check_finite(data: np.ndarray, path: Path) -> None:
    """Refuse a volume holding NaN or infinite values."""
    if np.issubdtype(data.dtype, np.floating):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise ValueError(
                f"{path} holds {bad} NaN or infinite voxels; replace them (for example with 0) "
                f"before loading."
            )


def _as_label(data: np.ndarray, path: Path) -> np.ndarray:
    """A label volume as int16, refusing non-integer or out-of-range values."""
    _check_finite(data, path)
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.mod(data, 1) == 0):
        raise ValueError(f"{path} holds non-integer values, so it is not a label volume.")
    if data.size and (data.min() < np.iinfo(np.int16).min or data.max() > np.iinfo(np.int16).max):
        raise ValueError(f"{path} holds label values outside the int16 range.")
    return data.astype(np.int16)


def _check_same_grid(ref_path: Path, ref_shape, ref_affine, path: Path, shape, affine) -> None:
    """Refuse two volumes that do not share one voxel grid (shape and affine)."""
    if tuple(shape) != tuple(ref_shape):
        raise ValueError(
            f"{path.name} has shape {tuple(shape)} but {ref_path.name} has {tuple(ref_shape)}; "
            f"all files of a case must share one voxel grid (resample them first)."
        )
    diff = float(np.abs(np.asarray(affine) - np.asarray(ref_affine)).max())
    if diff > GRID_TOLERANCE_MM:
        raise ValueError(
            f"{path.name} and {ref_path.name} have affines differing by up to {diff:.4g} mm; all "
            f"files of a case must share one voxel grid (register or resample them first)."
        )


def load_label(path: str | Path) -> tuple[np.ndarray, np.ndarray, LabelScheme]:
    """A label NIfTI as (int16 volume, affine, label scheme)."""
    path = Path(path)
    data, affine = _read_image(path)
    if data.ndim != 3:
        raise ValueError(f"{path} is 4D; a label volume must be 3D.")
    label = _as_label(data, path)
    return label, affine, label_scheme_for(np.unique(label))


def _load_file(path: Path) -> Case:
    """A case from one 3D or 4D NIfTI file."""
    data, affine = _read_image(path)
    _check_finite(data, path)
    if data.ndim == 3:
        modality = naming.modality_from_name(path) or naming.file_stem(path).lower()
        channels = data.astype(np.float32)[None]
        modalities: tuple[str, ...] = (modality,)
    else:
        modalities = naming.modalities_from_4d_name(path, data.shape[3])
        channels = np.ascontiguousarray(np.moveaxis(data, 3, 0), dtype=np.float32)
    return Case(channels, modalities, affine, None, None, (path,), naming.file_stem(path))


def _load_folder(folder: Path) -> Case:
    """A case from a folder holding one NIfTI file per modality and an optional label file."""
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and naming.is_nifti(p) and not p.name.startswith(".")
    )
    by_modality: dict[str, Path] = {}
    label_paths: list[Path] = []
    for p in files:
        if naming.is_label_name(p):
            label_paths.append(p)
            continue
        modality = naming.modality_from_name(p)
        if modality is None:
            continue
        if modality in by_modality:
            raise ValueError(
                f"Both {by_modality[modality].name} and {p.name} in {folder} name modality "
                f"{modality!r}; keep one of them in the folder."
            )
        by_modality[modality] = p
    if not by_modality:
        listing = ", ".join(p.name for p in files) or "no NIfTI files"
        raise ValueError(
            f"No file in {folder} names a modality (t1, t1ce, t2, flair, ...): found {listing}; "
            f"name files like case_t1.nii.gz or open a single file."
        )
    if len(label_paths) > 1:
        raise ValueError(
            f"{folder} holds several label files ({', '.join(p.name for p in label_paths)}); "
            f"keep one of them in the folder."
        )
    modalities = tuple(sorted(by_modality, key=naming.modality_sort_key))
    return case_from_files(folder.name, modalities, [by_modality[m] for m in modalities],
                           label_paths[0] if label_paths else None)


def case_from_files(name: str, modalities: Sequence[str], images: Sequence[Path], label: Path | None = None) -> Case:
    """A case from one 3D file per modality (or one 4D file, channels last, holding them all) and a label file.

    Every file must lie on the first image's voxel grid; ValueError names the file that does not.
    """
    images = [Path(p) for p in images]
    modalities = tuple(modalities)
    channels = ref_path = ref_affine = None
    for i, p in enumerate(images):
        data, affine = _read_image(p, float32_copies=len(images) if i == 0 else 0)
        _check_finite(data, p)
        if data.ndim == 4 and len(images) == 1:
            if data.shape[3] != len(modalities):
                raise ValueError(f"{p} holds {data.shape[3]} channels but {len(modalities)} modalities "
                                 f"({', '.join(modalities)}) are declared for case {name}.")
            ref_path, ref_affine = p, affine
            channels = np.ascontiguousarray(np.moveaxis(data, 3, 0), dtype=np.float32)
            break
        if data.ndim != 3:
            raise ValueError(f"{p} is {data.ndim}D; each modality file of case {name} must be 3D (one volume per modality).")
        if channels is None:
            if len(images) != len(modalities):
                raise ValueError(f"Case {name} has {len(images)} image files for {len(modalities)} modalities "
                                 f"({', '.join(modalities)}); give one file per modality.")
            ref_path, ref_affine = p, affine
            channels = np.empty((len(images), *data.shape), np.float32)
        else:
            _check_same_grid(ref_path, channels.shape[1:], ref_affine, p, data.shape, affine)
        channels[i] = data
        del data
    if channels is None:
        raise ValueError(f"Case {name} has no image file.")
    label_data = scheme = None
    sources = list(images)
    if label is not None:
        label = Path(label)
        data, affine = _read_image(label, float32_copies=0)
        if data.ndim != 3:
            raise ValueError(f"{label} is {data.ndim}D; a label volume must be 3D.")
        _check_same_grid(ref_path, channels.shape[1:], ref_affine, label, data.shape, affine)
        label_data = _as_label(data, label)
        scheme = label_scheme_for(np.unique(label_data))
        sources.append(label)
    return Case(channels, modalities, ref_affine, label_data, scheme, tuple(sources), name)


def load_case(path: str | Path, *, series: Optional[Mapping[str, str]] = None,
              reference: Optional[str] = None, prefer: Sequence[str] = ()) -> Case:
    """Open a case from a folder of per-modality NIfTI files, one 3D or 4D NIfTI file, or a DICOM study.

    A DICOM study is a folder, a .zip of one, or one multi-frame DICOM file (:func:`.dicom.read_study`).

    ``series`` ({modality: series number or UID}) chooses the DICOM series of each modality and
    ``reference`` the modality whose series gives the case's grid (default: the first of ``prefer``,
    a model's modalities, that the study has).
    """
    from .dicom import is_dicom_input
    from .dicom_case import case_from_study

    path = Path(path).expanduser()
    if is_dicom_input(path):  # a study or series folder, a zip of one, or one (multi-frame) DICOM file
        return case_from_study(path, series=series, reference=reference, prefer=prefer)
    if series or reference:
        raise ValueError(f"{path} is not a DICOM study; series and reference choices apply to DICOM studies only.")
    if path.is_dir():
        return _load_folder(path)
    if not path.exists():
        raise ValueError(f"No such file or folder: {path}.")
    if not naming.is_nifti(path):
        raise ValueError(f"{path} is not a NIfTI file (.nii or .nii.gz); open a NIfTI file or a folder of them.")
    return _load_file(path)


def load_region_mask(path: Path, case: Case) -> np.ndarray:
    """The non-zero voxels of a mask NIfTI that lies on the case's grid (ValueError otherwise)."""
    if not path.is_file():
        raise ValueError(f"The region mask {path} does not exist; give a NIfTI mask on the case's grid.")
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    while data.ndim > len(case.shape) and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape != case.shape:
        raise ValueError(f"The region mask {path.name} has shape {data.shape} but the case has {case.shape}; "
                        "draw the mask on the case's grid.")
    if not np.allclose(image.affine, case.affine, atol=1e-3):
        raise ValueError(f"The region mask {path.name} has a different affine from the case; "
                        "draw the mask on the case's grid.")
    return data > 0


# --------------------------------------------------------------------------- writing


def _storage_dtype(array: np.ndarray) -> np.dtype:
    """uint8 or int16 (int32 if needed) for integer and boolean arrays, float32 for the rest."""
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dtype)
        raise ValueError(f"Integer values {lo}..{hi} do not fit in int32; cannot save them as NIfTI.")
    if np.issubdtype(array.dtype, np.floating):
        return np.dtype(np.float32)
    raise ValueError(f"Cannot save an array of dtype {array.dtype} as NIfTI; give numbers.")


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    protected: Iterable[str | Path] = (),
) -> Path:
    """Write an array as NIfTI with the given affine, atomically, never onto a protected path."""
    path = Path(path).expanduser()
    if not naming.is_nifti(path):
        raise ValueError(f"{path} must end in .nii or .nii.gz to be written as NIfTI.")
    target = path.resolve()
    for p in protected:
        if Path(p).expanduser().resolve() == target:
            raise ValueError(f"Refusing to overwrite {path}: the case was loaded from it; choose another output path.")
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"A NIfTI affine must be 4x4, got shape {affine.shape}.")
    if array.ndim < 1 or array.ndim > 7:
        raise ValueError(f"A NIfTI image has 1 to 7 dimensions, got {array.ndim}.")
    data = array.astype(_storage_dtype(array), copy=False)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_path(path, suffix=".tmp" + suffix) as temporary:
        nib.save(img, temporary)
    return path
