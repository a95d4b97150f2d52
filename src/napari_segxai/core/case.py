"""A multimodal image case (:class:`Case`) and the label schemes that name its label values.

Files become cases in :mod:`.io` (:func:`.io.nifti.load_case`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from . import naming


@dataclass(frozen=True)
class LabelScheme:
    """How the integer values of a label volume map to class names."""

    name: str
    classes: dict[int, str]


BRATS_124 = LabelScheme("brats-1/2/4", {0: "background", 1: "necrosis", 2: "edema", 4: "enhancing"})


BRATS_123 = LabelScheme("brats-1/2/3", {0: "background", 1: "necrosis", 2: "edema", 3: "enhancing"})


BINARY = LabelScheme("binary", {0: "background", 1: "lesion"})


LABEL_SCHEMES: dict[str, LabelScheme] = {s.name: s for s in (BRATS_124, BRATS_123, BINARY)}


def label_scheme_for(values: Iterable[int]) -> LabelScheme:
    """The label scheme of a set of label values: binary, brats-1/2/4, brats-1/2/3, else unknown."""
    present = {int(v) for v in values}
    if present <= {0, 1}:
        return BINARY
    if present <= {0, 1, 2, 4}:
        return BRATS_124
    if present <= {0, 1, 2, 3}:
        return BRATS_123
    classes = {0: "background"}
    classes.update({v: f"label {v}" for v in sorted(present) if v != 0})
    return LabelScheme("unknown", classes)


@dataclass(frozen=True, eq=False)
class Case:
    """A multimodal image case: channels on one voxel grid, its affine and an optional label."""

    channels: np.ndarray
    modalities: tuple[str, ...]
    affine: np.ndarray
    label: np.ndarray | None = None
    label_scheme: LabelScheme | None = None
    source_paths: tuple[Path, ...] = ()
    name: str = "case"
    #: Files of the image series whose grid the case is on (DICOM studies: the reference series), for
    #: outputs that reference it (DICOM SEG); empty for NIfTI cases.
    reference_files: tuple[Path, ...] = ()
    #: What the user should know about how the case was assembled (series left out, misregistration).
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        affine = np.asarray(self.affine, dtype=np.float64)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "source_paths", tuple(Path(p) for p in self.source_paths))
        object.__setattr__(self, "reference_files", tuple(Path(p) for p in self.reference_files))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))
        if self.channels.ndim < 2:
            raise ValueError(f"Case channels must be shaped (C, *spatial), got shape {self.channels.shape}.")
        n_spatial = self.channels.ndim - 1
        if len(self.modalities) != self.channels.shape[0]:
            raise ValueError(
                f"Case has {self.channels.shape[0]} channels but {len(self.modalities)} modality "
                f"names {self.modalities}; give one name per channel."
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"Case modality names must be distinct, got {self.modalities}.")
        if affine.shape != (n_spatial + 1, n_spatial + 1) and affine.shape != (4, 4):
            raise ValueError(f"Case affine must be ({n_spatial + 1}, {n_spatial + 1}), got {affine.shape}.")
        if self.label is not None and self.label.shape != self.channels.shape[1:]:
            raise ValueError(
                f"Case label shape {self.label.shape} differs from the image shape "
                f"{self.channels.shape[1:]}; give a label on the image grid."
            )

    def shown_sources(self) -> list[str] | str:
        """The case's files as outputs may show them: a DICOM study's paths are left out (they may name the patient)."""
        if self.reference_files:
            return f"DICOM study {self.name} ({len(self.source_paths)} files; paths left out, as they may name the patient)"
        return [str(p) for p in self.source_paths]

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape (X, Y, Z)."""
        return tuple(int(s) for s in self.channels.shape[1:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis, from the affine's column norms."""
        n = len(self.shape)
        return tuple(float(s) for s in np.linalg.norm(self.affine[:n, :n], axis=0))

    def channel(self, modality: str) -> np.ndarray:
        """The (X, Y, Z) volume of one modality, named canonically or any usual way (``T1c``)."""
        wanted = naming.normalize_modality(modality)
        for name in (modality, wanted):
            if name in self.modalities:
                return self.channels[self.modalities.index(name)]
        raise ValueError(
            f"Case {self.name!r} has no modality {modality!r}; it has {', '.join(self.modalities)}."
        )
