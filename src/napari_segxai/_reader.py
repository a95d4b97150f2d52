"""napari reader: a NIfTI file, a case folder or a DICOM study folder -> one image layer per modality (+ labels)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

from napari.utils.notifications import show_error

from .core.naming import is_nifti

PathOrPaths = Union[str, os.PathLike, list, tuple]


def _single_path(path: PathOrPaths) -> Optional[Path]:
    """The one path napari asks about, or None for a stack of several."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return Path(os.fspath(path))
    except TypeError:
        return None


def _looks_readable(path: Path) -> bool:
    """Cheap checks before loading: a NIfTI file, a folder holding one, or DICOM (a file, a folder or a zip of them)."""
    from .core.io.dicom import is_dicom_input

    try:
        if path.is_file() and is_nifti(path):
            return True
        if path.is_dir() and any(is_nifti(child) for child in path.iterdir() if child.is_file()):
            return True
        return is_dicom_input(path)
    except OSError:
        return False


def napari_get_reader(path: PathOrPaths) -> Optional[Callable[[PathOrPaths], list]]:
    """Return a reader for a NIfTI case (file or folder) or a DICOM study, or None when ``path`` is not one."""
    single = _single_path(path)
    if single is None or not _looks_readable(single):
        return None
    from .core.io.nifti import load_case

    try:
        case = load_case(single)
    except ValueError as err:  # a user's bad file: say why (napari itself only says it was refused)
        from .core.io.dicom import DicomError

        hint = (" In napari, choose the series in the DICOM study widget (Plugins > SegXAI > DICOM study)."
                if isinstance(err, DicomError) and "--series" in str(err) else "")
        show_error(str(err) + hint)
        return None
    except Exception:  # a reader must never raise: napari then offers the next plugin
        return None
    if case.notes:  # how a DICOM study became the case: series left out, series that may be misregistered
        from napari.utils.notifications import show_info

        show_info(" ".join(case.notes))

    def read_case(_path: PathOrPaths) -> list:
        """Layer data for the case loaded when napari asked for a reader (the viewer then shows it axial)."""
        from ._layers import case_layer_data
        from ._orientation import watch_current_viewer

        watch_current_viewer()
        return case_layer_data(case)

    return read_case
