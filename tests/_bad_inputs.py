"""A corpus of bad inputs (cases, model cards, weights, output folders), written into a folder by the tests.

Every entry is something a user can hand to ``segxai segment CASE --model CARD --out DIR`` (or to
the Segment widget) that must be refused with one clear sentence, without touching any input and
without leaving a partial output behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch
import yaml

from _cards import TINY_CARD, lps_affine, merged, write_card

MODALITIES = ("flair", "t1")  # TINY_CARD's inputs
SHAPE = (12, 12, 10)


@dataclass(frozen=True)
class BadInput:
    """One bad input: the case and card to run, where output goes, and words the error must contain."""

    name: str
    case: Path
    card: Path
    out: Path
    says: str  # a fragment the error sentence must contain (case-insensitive)
    save_as: Path | None = None  # output entries: where the viewer user saves the segmentation instead
    save_says: str = ""  # what refusing that save must say


def volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """A smooth positive float32 volume."""
    rng = np.random.default_rng(seed)
    return (100 + 10 * rng.standard_normal(shape)).astype(np.float32)


def save(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    """Save ``array`` as NIfTI with an LPS affine unless one is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, lps_affine() if affine is None else affine), str(path))
    return path


def good_case(folder: Path, *, skip: tuple[str, ...] = (), label: np.ndarray | None = None) -> Path:
    """A valid case folder for TINY_CARD (flair, t1 and a 1/2/4 label), minus the modalities in ``skip``."""
    for i, modality in enumerate(MODALITIES):
        if modality not in skip:
            save(volume(i), folder / f"{folder.name}_{modality}.nii.gz")
    if label is None:
        label = np.zeros(SHAPE, np.int16)
        label[4:8, 4:8, 3:7] = 2
    save(label, folder / f"{folder.name}_seg.nii.gz")
    return folder


def nifti_bytes(array: np.ndarray) -> bytes:
    """The bytes of a .nii.gz holding ``array``."""
    img = nib.Nifti1Image(array, lps_affine())
    return gzip.compress(img.to_bytes())


def _case_file(root: Path, name: str, data: bytes) -> Path:
    """A one-file case written as raw bytes."""
    path = root / "cases" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _header_only(path: Path, shape=(32767, 32767, 32767)) -> Path:
    """A NIfTI header declaring ``shape`` float32 voxels with almost no data behind it."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(lps_affine(), code=1)
    header.set_sform(lps_affine(), code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        buffer = io.BytesIO()
        header.write_to(buffer)
        handle.write(buffer.getvalue() + b"\0" * 4 + b"\0" * 1024)
    return path


class _Boom:
    """A pickle payload that would create a file if unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def build(root: Path) -> list[BadInput]:
    """Write the whole corpus under ``root``; every entry's output folder is ``root/out/<name>``."""
    root.mkdir(parents=True, exist_ok=True)
    cards = root / "cards"
    card = write_card(cards / "good")
    case = good_case(root / "cases" / "good")
    entries: list[BadInput] = []

    def add(name: str, says: str, *, case_path: Path = case, card_path: Path = card, out: Path | None = None,
            save_as: Path | None = None, save_says: str = ""):
        entries.append(BadInput(name, case_path, card_path, out or root / "out" / name, says, save_as, save_says))

    # ---------------------------------------------------------------- case files
    whole = nifti_bytes(volume())
    add("truncated .nii.gz", "truncated or corrupt", case_path=_case_file(root, "truncated_flair.nii.gz", whole[: len(whole) // 2]))
    add("corrupt gzip stream", "cannot read", case_path=_case_file(root, "corrupt_flair.nii.gz", b"\x1f\x8b\x08\x00" + os.urandom(2000)))
    add("text file named .nii", "cannot read", case_path=_case_file(root, "notes_flair.nii", b"patient notes, not an image\n" * 40))
    add("empty .nii.gz", "cannot read", case_path=_case_file(root, "empty_flair.nii.gz", b""))
    add("JPEG bytes named .nii.gz", "cannot read", case_path=_case_file(root, "photo_flair.nii.gz", b"\xff\xd8\xff\xe0" + os.urandom(500)))
    add("not a NIfTI extension", "not a nifti file", case_path=_case_file(root, "scan_flair.png", b"\x89PNG\r\n"))
    add("2D image", "give a 3d or 4d", case_path=save(volume(shape=(12, 12)), root / "cases" / "slice_flair.nii.gz"))
    add("5D image", "give a 3d or 4d", case_path=save(volume(shape=(6, 6, 5, 2, 2)), root / "cases" / "five_d.nii.gz"))
    add("absurd header dimensions", "header is probably corrupt", case_path=_header_only(root / "cases" / "huge_flair.nii.gz"))
    # 3000^3 float32 is a valid image of 108 GB: it needs about 350 GB to load, more than any test machine has
    add("valid image too large for memory", "of memory but only",
        case_path=_header_only(root / "cases" / "large_flair.nii.gz", (3000, 3000, 3000)))
    nan = volume()
    nan[2, 3, 4] = np.nan
    add("NaN voxel", "nan or infinite", case_path=save(nan, root / "cases" / "nan_case" / "nan_case_flair.nii.gz").parent)
    save(volume(1), root / "cases" / "nan_case" / "nan_case_t1.nii.gz")
    inf = volume()
    inf[0, 0, 0] = np.inf
    add("infinite voxel", "nan or infinite", case_path=save(inf, root / "cases" / "inf_flair.nii.gz"))
    complex_volume = (volume() + 1j * volume(1)).astype(np.complex64)
    add("complex voxels", "complex", case_path=save(complex_volume, root / "cases" / "complex_flair.nii.gz"))
    zero = good_case(root / "cases" / "all_zero")
    save(np.zeros(SHAPE, np.float32), zero / "all_zero_flair.nii.gz")
    add("all-zero modality", "empty", case_path=zero)

    # ---------------------------------------------------------------- case folders
    shape_mismatch = good_case(root / "cases" / "shape_mismatch")
    save(volume(1, shape=(12, 12, 9)), shape_mismatch / "shape_mismatch_t1.nii.gz")
    add("modalities with different shapes", "share one voxel grid", case_path=shape_mismatch)
    affine_mismatch = good_case(root / "cases" / "affine_mismatch")
    moved = lps_affine()
    moved[:3, 3] += 7.0
    save(volume(1), affine_mismatch / "affine_mismatch_t1.nii.gz", affine=moved)
    add("modalities with different affines", "share one voxel grid", case_path=affine_mismatch)
    duplicate = good_case(root / "cases" / "duplicate")
    save(volume(3), duplicate / "FLAIR.nii.gz")
    add("duplicate modality", "keep one of them", case_path=duplicate)
    add("missing modality", "t1", case_path=good_case(root / "cases" / "missing", skip=("t1",)))
    unknown = root / "cases" / "unknown_names"
    save(volume(), unknown / "scan_a.nii.gz")
    save(volume(1), unknown / "scan_b.nii.gz")
    add("unknown naming", "names a modality", case_path=unknown)
    empty_folder = root / "cases" / "empty_folder"
    empty_folder.mkdir(parents=True)
    add("empty folder", "names a modality", case_path=empty_folder)
    add("path that does not exist", "no such file or folder", case_path=root / "cases" / "nowhere")
    only_label = root / "cases" / "only_label"
    save(np.zeros(SHAPE, np.int16), only_label / "only_label_seg.nii.gz")
    add("folder with only a label", "names a modality", case_path=only_label)
    odd = np.zeros(SHAPE, np.float32)
    odd[3:6, 3:6, 3:6] = 2.5
    add("label with non-integer values", "not a label volume", case_path=good_case(root / "cases" / "odd_label", label=odd))
    two_labels = good_case(root / "cases" / "two_labels")
    save(np.zeros(SHAPE, np.int16), two_labels / "two_labels_label.nii.gz")
    add("two label files", "several label files", case_path=two_labels)
    four_d = root / "cases" / "four_d_in_folder"
    good_case(four_d)
    save(np.stack([volume(), volume(1)], -1), four_d / "four_d_in_folder_t1.nii.gz")
    add("4D file inside a case folder", "must be 3d", case_path=four_d)
    wrong_channels = save(np.stack([volume(i) for i in range(3)], -1), root / "cases" / "three_channels.nii.gz")
    add("4D file with the wrong channel count", "modalit", case_path=wrong_channels)

    # ---------------------------------------------------------------- model cards and weights
    def bad_card(name: str, says: str, *, save_weights: bool = True, text: str | None = None, **overrides):
        folder = cards / name.replace(" ", "_")
        if text is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "card.yaml"
            path.write_text(text, encoding="utf-8")
        else:
            path = write_card(folder, save_weights=False, **overrides)
            if save_weights:  # the good card's weights (some of these cards cannot build a network)
                shutil.copyfile(cards / "good" / "weights.safetensors", folder / "weights.safetensors")
        add(f"card: {name}", says, card_path=path)
        return folder

    from _cards import DELETE

    bad_card("missing architecture", "architecture", architecture=DELETE)
    bad_card("missing classes", "classes", classes=DELETE)
    bad_card("missing modalities", "modalities", modalities=DELETE)
    bad_card("unknown architecture", "not a known architecture", architecture="ResNeXt9000")
    bad_card("bad kwargs", "kwargs", kwargs={**TINY_CARD["kwargs"], "colour": "blue"})
    bad_card("unknown activation", "activation", activation="relu6")
    bad_card("negative window", "roi_size", inference={"roi_size": [-4, 16, 16]})
    bad_card("not YAML", "yaml", text="name: [unclosed\n  - : :\n")
    bad_card("YAML list, not a mapping", "mapping", text="- just\n- a list\n")
    add("card file that does not exist", "does not exist", card_path=cards / "nowhere.yaml")
    bad_card("weights file missing", "does not exist", save_weights=False, weights="absent.safetensors")
    mismatch = bad_card("mismatched weights", "does not match", save_weights=False)
    from napari_segxai.core.model.architectures import create_network
    from napari_segxai.core.model.weights import save_state_dict

    bigger = merged(TINY_CARD, {})["kwargs"] | {"channels": [8, 16]}
    save_state_dict(create_network("UNet", bigger).state_dict(), mismatch / "weights.safetensors")
    nonfinite = bad_card("non-finite weights", "nan or inf", save_weights=False)
    state = create_network("UNet", TINY_CARD["kwargs"]).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first].clone().fill_(float("nan"))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(nonfinite / "weights.safetensors"))
    corrupt_weights = bad_card("corrupt safetensors", "not a readable safetensors", save_weights=False)
    (corrupt_weights / "weights.safetensors").write_bytes(os.urandom(300))
    malicious = bad_card("malicious pickle", "trusted", save_weights=False, weights="weights.pt")
    with open(malicious / "weights.pt", "wb") as handle:
        pickle.dump({"state": _Boom(root / "PWNED")}, handle)
    garbage_ts = bad_card("garbage TorchScript", "not a loadable torchscript", save_weights=False,
                          architecture="torchscript", kwargs={}, trusted=True, weights="model.ts")
    (garbage_ts / "model.ts").write_bytes(b"PK\x03\x04" + os.urandom(400))
    untrusted_ts = bad_card("untrusted TorchScript archive", "--trust-model", save_weights=False,
                            architecture="torchscript", kwargs={}, weights="model.ts")
    torch.jit.save(torch.jit.script(create_network("UNet", TINY_CARD["kwargs"]).eval()), str(untrusted_ts / "model.ts"))
    bad_card("refuses the case's spacing", "spacing", preprocessing={"spacing_policy": "refuse"})

    # ---------------------------------------------------------------- outputs
    flair = case / f"{case.name}_flair.nii.gz"
    add("output path equal to an input", "own folder", out=case, save_as=flair, save_says="refusing to overwrite")
    add("output folder is a file", "is a file, not a folder", out=flair, save_as=flair / "seg.nii.gz",
        save_says="is a file, not a folder")
    readonly = root / "out" / "read-only"
    readonly.mkdir(parents=True)
    readonly.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere a mode allows nobody to; a read-only mount stops it
        readonly = Path("/proc/self/segxai-out")
    add("read-only output folder", "cannot write", out=readonly, save_as=readonly / "seg.nii.gz",
        save_says="cannot write")
    return entries


def fingerprints(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (outside root/out), by relative path."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "out" not in path.relative_to(root).parts[:1]:
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def leftovers(root: Path) -> list[str]:
    """Files under root/out (any output written for a refused input is a partial output)."""
    out = root / "out"
    return sorted(str(p.relative_to(root)) for p in out.rglob("*") if p.is_file()) if out.exists() else []


def one_sentence(message: str) -> bool:
    """One line ending with a full stop, no traceback or repr noise."""
    return ("\n" not in message.strip() and message.strip().endswith(".") and "Traceback" not in message
            and not re.search(r"<[a-zA-Z_.]+ object at 0x", message))


def through_the_cli(entry: BadInput) -> tuple[bool, str]:
    """Run ``segxai segment`` on ``entry``: (exit 2 with one sentence holding ``entry.says``, that sentence)."""
    from napari_segxai.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["segment", str(entry.case), "--model", str(entry.card), "--out", str(entry.out)])
    err = err.getvalue()
    prefix = "segxai segment: error: "
    # the terminal progress bar may come first: the error is what follows the prefix
    message = err.split(prefix, 1)[1] if prefix in err else err
    clear = status == 2 and prefix in err and one_sentence(message)
    return clear and entry.says.lower() in message.lower(), message.strip()


def changed_inputs(root: Path, before: dict[str, str]) -> list[str]:
    """Inputs whose bytes differ from ``before`` (or that disappeared)."""
    after = fingerprints(root)
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def run_all(entries, run_one: Callable[[BadInput], tuple[bool, str]]):
    """Run every entry; returns (tried, clear, crashes, rows) with the error sentence of each."""
    rows = []
    for entry in entries:
        try:
            clear, message = run_one(entry)
            rows.append((entry, clear, message, None))
        except Exception as err:  # a crash: anything other than a clear refusal
            rows.append((entry, False, "", f"{type(err).__name__}: {err}"))
    return rows


def cleanup(root: Path) -> None:
    """Make the read-only folder writable again so pytest can remove the corpus."""
    for path in (root / "out").rglob("*") if (root / "out").exists() else []:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)
