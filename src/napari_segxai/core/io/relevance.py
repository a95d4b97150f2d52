"""A Relevance on its case grid as files: one 4D NIfTI per class (channels last), the target masks, a JSON record.

``segxai explain``, ``segxai demo`` and the Explain widget's "Save relevance…" all write through
:func:`write_relevance`, so the three give the same files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .files import write_text


def safe_name(text: str) -> str:
    """A class or method name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "class"


def output_paths(case_name: str, method: str, class_names: Sequence[str], out: Path) -> dict[str, Path]:
    """Where each class's relevance, the target masks (``__target__``) and the JSON record (``__json__``) go."""
    stem = f"{case_name}_{safe_name(method)}"
    paths = {name: out / f"{stem}_{safe_name(name)}.nii.gz" for name in class_names}
    if len(set(paths.values())) != len(paths):
        paths = {name: out / f"{stem}_{i}_{safe_name(name)}.nii.gz" for i, name in enumerate(class_names)}
    paths["__target__"] = out / f"{stem}_target.nii.gz"
    paths["__json__"] = out / f"{stem}.json"
    return paths


def write_relevance(result, case_name: str, out: str | Path, *, protected: Sequence[str | Path] = (),
                    details: dict | None = None, maps: bool = True) -> dict[str, str]:
    """Write a Relevance on its case grid into ``out``; the written files by class name, plus ``__json__``.

    ``maps=False`` writes the JSON record only (the maps go elsewhere, e.g. as DICOM).
    ``protected`` files (the case's inputs) are never overwritten: a ValueError says so before
    anything is written. ``details`` go into the JSON record (``voxel`` and ``region`` into its target).
    """
    from .nifti import save_nifti

    if result.affine is None:
        raise ValueError("This relevance has no affine (it is not on a case's grid); explain a case to export it.")
    out = Path(out)
    protected = [Path(p) for p in protected]
    paths = output_paths(case_name, result.method, result.class_names, out)
    resolved = {p.expanduser().resolve() for p in protected}
    for path in paths.values():
        if path.resolve() in resolved:
            raise ValueError(f"Refusing to overwrite {path}: it is an input; choose another folder.")
    written: dict[str, str] = {}
    for k, name in enumerate(result.class_names if maps else ()):
        save_nifti(np.moveaxis(result.relevance[k], 0, -1), result.affine, paths[name], protected=protected)
        written[name] = str(paths[name])
    masks = np.asarray(result.target.masks)
    target_file = None
    if maps and masks.shape[1:] == tuple(result.relevance.shape[2:]):
        save_nifti(np.moveaxis(masks.astype(np.uint8), 0, -1), result.affine, paths["__target__"],
                   protected=protected)
        target_file = str(paths["__target__"])
    details = dict(details or {})
    record = {
        "case": case_name,
        "method": result.method,
        "parameters": {k: _plain(v) for k, v in result.parameters.items()},
        "signed": result.signed,
        "target": {
            "kind": result.target.kind,
            "description": result.target_description,
            "output": result.target.output,
            "threshold": result.target.threshold,
            "voxel": details.pop("voxel", None),
            "region": details.pop("region", None),
            "file": target_file,
        },
        "classes": list(result.class_names),
        "channels": list(result.channel_names),
        "files": written,
        "shape": list(result.relevance.shape[2:]),
        "affine": np.asarray(result.affine, dtype=float).tolist(),
        "seconds": round(float(result.seconds), 3),
        **details,
    }
    written["__json__"] = str(write_record(record, paths["__json__"], protected))
    return written


def write_record(record: dict, path: Path, protected: Sequence[Path]) -> Path:
    """Write ``record`` as JSON atomically (temporary name, then rename), never onto a protected path."""
    target = path.resolve()
    if any(Path(p).resolve() == target for p in protected):
        raise ValueError(f"Refusing to overwrite {path}: the case was loaded from it; choose another folder.")
    write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def _plain(value: Any) -> Any:
    """A parameter value as plain JSON (numbers, text, booleans)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
