"""Modality and label names from NIfTI file names, across the usual brain-MRI conventions.

A file name is lowercased, its extension (``.nii.gz`` / ``.nii``) removed and split into tokens
at ``_``, ``-``, ``.``, ``+`` and spaces. The last one, two or three tokens, joined, are looked
up in the tables below (longest match wins), so ``Brats18_X_1_t1ce``, ``BraTS-GLI-1-000-t1c``,
``TCGA-DU-7294_fla``, ``T1POST``, ``t1_gd`` and ``sub-01_T2w`` all resolve.

- ``MODALITY_ALIASES``: token(s) -> canonical name; the four canonical names of brain-tumour
  MRI are t1, t1ce, t2, flair (``CANONICAL_MODALITIES``, also the channel order), plus a few
  other MRI contrasts kept by their usual short name (pd, dwi, adc, swi, t2star).
- BIDS contrast entity: a ``ce-<agent>`` token before a T1 name makes it t1ce
  (``sub-01_ce-gd_T1w``).
- ``LABEL_ALIASES``: token(s) that mark a reference label file (``_seg``, ``-seg``, ``label``,
  ``mask``, ``consensus_lesion_mask``, ``gt``, ...). A name that also says ``brain``
  (``brain_mask``) is a skull-stripping mask, not a label, and is ignored.
- ``IGNORED_PREFIXES``: files whose first token is ``pred``, ``prediction``, ``fusion``,
  ``output`` or ``result`` hold an algorithm's segmentation, not an image or a reference
  label; they are never taken as a modality or as the case's label.
"""

from __future__ import annotations

import re
from pathlib import Path

CANONICAL_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

MODALITY_ALIASES: dict[str, str] = {
    # native T1
    "t1": "t1", "t1n": "t1", "t1w": "t1", "t1pre": "t1", "t1native": "t1", "t1nat": "t1",
    "mprage": "t1",
    # contrast-enhanced T1
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1post": "t1ce", "t1contrast": "t1ce",
    "t1wce": "t1ce", "t1cwe": "t1ce", "t1wc": "t1ce", "cet1": "t1ce", "cet1w": "t1ce",
    "t1postcontrast": "t1ce", "t1gad": "t1ce", "t1gado": "t1ce", "t1wgd": "t1ce",
    # T2
    "t2": "t2", "t2w": "t2", "t2wi": "t2",
    # FLAIR
    "flair": "flair", "fla": "flair", "t2f": "flair", "t2flair": "flair", "t2wflair": "flair",
    "t2fl": "flair", "flairt2": "flair",
    # other MRI contrasts, kept under their usual short names
    "pd": "pd", "pdw": "pd", "dwi": "dwi", "adc": "adc", "swi": "swi",
    "t2star": "t2star", "t2s": "t2star",
}

LABEL_ALIASES: frozenset[str] = frozenset({
    "seg", "segmentation", "label", "labels", "labelmap", "mask", "lesionmask", "lesion",
    "lesions", "gt", "groundtruth", "truth", "consensus", "consensuslesionmask", "manual",
    "manualseg", "annotation", "roi", "tumor", "tumour", "tumormask", "tumourmask",
})

IGNORED_PREFIXES: frozenset[str] = frozenset({"pred", "prediction", "fusion", "output", "result"})

_SPLIT = re.compile(r"[_\-.+ ]+")


def file_stem(path: str | Path) -> str:
    """The file name without its NIfTI extension (``.nii.gz``, ``.nii``, ``.gz``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def is_nifti(path: str | Path) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def name_tokens(path_or_stem: str | Path) -> list[str]:
    """Lowercased tokens of a file stem, split at ``_ - . +`` and spaces."""
    return [t for t in _SPLIT.split(file_stem(path_or_stem).lower()) if t]


def _suffix_match(tokens: list[str], table) -> str | None:
    """The key of ``table`` matching the longest suffix (3, 2, then 1 tokens) of ``tokens``."""
    for n in (3, 2, 1):
        if len(tokens) >= n:
            key = "".join(tokens[-n:])
            if key in table:
                return key
    return None


def is_ignored(path: str | Path) -> bool:
    """Whether a file holds an algorithm's output (``pred_*``, ``fusion_*``, ...), not data."""
    tokens = name_tokens(path)
    return bool(tokens) and tokens[0] in IGNORED_PREFIXES


def modality_from_name(path: str | Path) -> str | None:
    """The canonical modality a file name declares, or ``None`` when it declares none."""
    tokens = name_tokens(path)
    if not tokens or is_ignored(path):
        return None
    key = _suffix_match(tokens, MODALITY_ALIASES)
    if key is None:
        return None
    modality = MODALITY_ALIASES[key]
    if modality == "t1" and "ce" in tokens[:-1]:
        return "t1ce"
    return modality


def normalize_modality(name: str) -> str:
    """The canonical name of a modality written any usual way (``T1c`` -> ``t1ce``); else lowercased."""
    canonical = modality_from_name(name.strip())
    return canonical if canonical is not None else name.strip().lower()


def is_label_name(path: str | Path) -> bool:
    """Whether a file name marks a reference label (``_seg``, ``-seg``, ``mask``, ...)."""
    tokens = name_tokens(path)
    if not tokens or is_ignored(path) or any("brain" in t for t in tokens):
        return False
    return _suffix_match(tokens, LABEL_ALIASES) is not None


def modality_sort_key(modality: str) -> tuple[int, str]:
    """Sort key giving the canonical order t1, t1ce, t2, flair, then other names alphabetically."""
    if modality in CANONICAL_MODALITIES:
        return (CANONICAL_MODALITIES.index(modality), "")
    return (len(CANONICAL_MODALITIES), modality)


def modalities_from_4d_name(path: str | Path, n_channels: int) -> tuple[str, ...]:
    """Channel names of a 4D file: from its name when it lists them in order, else channel0.."""
    tokens = name_tokens(path)
    if len(tokens) >= n_channels:
        names = [MODALITY_ALIASES.get(t) for t in tokens[-n_channels:]]
        if all(names) and len(set(names)) == n_channels:
            return tuple(names)
    return tuple(f"channel{i}" for i in range(n_channels))
