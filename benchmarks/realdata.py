"""The labelled real tumour cases as an nnU-Net v2 raw training dataset, and a third case prepared.

Run: ``.venv/bin/python benchmarks/realdata.py OUT [--leave-out CASE ...] [--extra DIR ...]``. Writes
``OUT`` (a new folder): ``dataset.json`` and, in ``imagesTr/`` and ``labelsTr/``, symbolic links to the
case files (nothing is copied or changed; ``--relative`` makes the links relative, as in the committed
``sample_data/realdata-tcga``, which the bundled demo model was trained on). The cases are the two
labelled ones of ``../shared/realdata`` and every ``--extra`` case folder. A shared case's label is its
``fusion_mav`` (the majority vote of five BraTS-2020 algorithms, the closest thing to ground truth these
cases have; labels 1 necrosis, 2 oedema, 4 enhancing). ``segxai train --data OUT`` trains on it
(``configs/demo3d.yaml`` says how the bundled model was trained), and
``benchmarks/demo_quality.py --leave-one-out`` trains one model per left-out case with the same recipe.

A third labelled glioma case, legally usable here, is the test case of the BrainLesion ``BraTS``
package (github.com/BrainLesion/BraTS, Apache-2.0; a BraTS case, under the BraTS data terms; added by
commit 528ab54 of its pull request 138, and untracked by the next commit there).
``--brainlesion CHECKOUT OUT`` prepares it: ``git clone https://github.com/BrainLesion/BraTS CHECKOUT
&& git -C CHECKOUT fetch origin pull/138/head && git -C CHECKOUT checkout 528ab54``, then this writes ``OUT/BL-BraTS-528ab54/``: links named like the shared cases to the four skull-stripped
SRI24 images of ``data/preprocessed_case`` and, as ``<name>_seg.nii.gz``, the label of
``outputs/segmentation.nii.gz`` (the BraTS-2025 adult-glioma algorithm ``BraTS25_2``'s segmentation,
labels 1 necrosis / non-enhancing core, 2 oedema, 3 enhancing) with enhancing moved from 3 to 4, the
shared cases' scheme. Give that folder to ``--extra`` here and in ``benchmarks/demo_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
LABELLED = ("TCGA-DU-7294", "TCGA-FG-6692")
"""The realdata cases with a tumour label (the BraTS-2023 case has none, the MS case is not a tumour)."""
CHANNELS = (("t1", "_t1"), ("t1ce", "_t1c"), ("t2", "_t2"), ("flair", "_fla"))
LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}

BRAINLESION = "BL-BraTS-528ab54"
"""The prepared BrainLesion test case's folder and case name (source repository and commit)."""
BRAINLESION_IMAGES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
"""Modality: file stem in the checkout's ``data/preprocessed_case`` (BraTS-2023 names)."""
BRAINLESION_LABEL = "outputs/segmentation.nii.gz"


def shared_cases(realdata: Path = REALDATA) -> list[Path]:
    """The labelled case folders of ``../shared/realdata`` that are present."""
    return [realdata / name for name in LABELLED if (realdata / name).is_dir()]


def label_path(folder: Path) -> Path:
    """A labelled case folder's reference label: ``fusion_mav.nii.gz`` (shared), else ``<name>_seg.nii.gz`` (prepared)."""
    fusion = folder / "fusion_mav.nii.gz"
    return fusion if fusion.is_file() else folder / f"{folder.name}_seg.nii.gz"


def build(out: Path, cases: Sequence[Path], relative: bool = False) -> Path:
    """Write the nnU-Net raw dataset of the case folders ``cases`` into the new folder ``out``; ValueError if a file is missing.

    ``relative``: the links name their targets relative to where they are, so the folder works in
    any clone that has ``shared/`` beside it (how ``sample_data/realdata-tcga`` is committed).
    """
    out = Path(out).absolute()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; give a new folder.")
    if not cases:
        raise ValueError("No case left to train on.")
    for folder in cases:
        files = [folder / f"{folder.name}{suffix}.nii.gz" for _, suffix in CHANNELS] + [label_path(folder)]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise ValueError(f"Case {folder.name}: {missing[0]} is missing (is ../shared/realdata beside the repository?).")
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)

    def link(path: Path, target: Path) -> None:
        target = target.resolve()
        path.symlink_to(os.path.relpath(target, path.parent) if relative else target)

    for folder in cases:
        for index, (_, suffix) in enumerate(CHANNELS):
            link(out / "imagesTr" / f"{folder.name}_{index:04d}.nii.gz", folder / f"{folder.name}{suffix}.nii.gz")
        link(out / "labelsTr" / f"{folder.name}.nii.gz", label_path(folder))
    names = ", ".join(folder.name for folder in cases)
    dataset = {"channel_names": {str(i): m for i, (m, _) in enumerate(CHANNELS)}, "labels": LABELS,
               "numTraining": len(cases), "file_ending": ".nii.gz",
               "name": "realdata-tcga", "description": f"labelled real glioma cases ({names}); labels 1/2/4"}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2), encoding="utf-8")
    return out


def prepare_brainlesion(checkout: Path, out: Path) -> Path:
    """Write the BrainLesion ``BraTS`` test case of ``checkout`` (at commit 528ab54) as ``out/BL-BraTS-528ab54``.

    Images are linked, the label is written anew with enhancing 3 -> 4; ``checkout`` is not changed.
    ValueError when a file is missing, the label is not on the images' grid or holds other values,
    or the case folder exists.
    """
    import nibabel as nib
    import numpy as np

    checkout = Path(checkout).absolute()
    images = {m: checkout / "data" / "preprocessed_case" / f"{stem}.nii.gz" for m, stem in BRAINLESION_IMAGES.items()}
    label = checkout / BRAINLESION_LABEL
    for path in [*images.values(), label]:
        if not path.is_file():
            raise ValueError(f"{path} is missing; give a clone of github.com/BrainLesion/BraTS checked out at commit "
                             "528ab54 (git fetch origin pull/138/head first; later commits lack the test case).")
    target = Path(out).absolute() / BRAINLESION
    if target.exists():
        raise ValueError(f"{target} exists; give another OUT or remove it.")
    reference = nib.load(str(label))
    values = np.asarray(reference.dataobj)
    shape = nib.load(str(images["t1"])).shape
    if values.shape != shape:
        raise ValueError(f"{label} has shape {values.shape}, the images {shape}; not the expected checkout.")
    present = set(np.unique(values).tolist())
    if not present <= {0, 1, 2, 3}:
        raise ValueError(f"{label} holds labels {sorted(present)}; expected BraTS-2023 labels 0-3.")
    target.mkdir(parents=True)
    for modality, suffix in CHANNELS:
        (target / f"{BRAINLESION}{suffix}.nii.gz").symlink_to(images[modality])
    moved = np.where(values == 3, 4, values).astype(np.uint8)
    nib.save(nib.Nifti1Image(moved, reference.affine, reference.header), str(target / f"{BRAINLESION}_seg.nii.gz"))
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="new folder for the dataset (with --brainlesion: for the case folder)")
    parser.add_argument("--relative", action="store_true", help="links relative to OUT (a folder to commit)")
    parser.add_argument("--leave-out", nargs="*", default=[], metavar="CASE", help="cases to leave out, by folder name")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], metavar="DIR",
                        help="more labelled case folders (as --brainlesion writes them)")
    parser.add_argument("--brainlesion", type=Path, default=None, metavar="CHECKOUT",
                        help="instead: prepare the BrainLesion BraTS test case of CHECKOUT (commit 528ab54) in OUT")
    args = parser.parse_args(argv)
    try:
        if args.brainlesion is not None:
            print(prepare_brainlesion(args.brainlesion, args.out))
            return 0
        cases = shared_cases() + [Path(p).absolute() for p in args.extra]
        unknown = sorted(set(args.leave_out) - {c.name for c in cases})
        if unknown:
            parser.error(f"--leave-out {unknown[0]}: not one of {', '.join(c.name for c in cases)}")
        print(build(args.out, [c for c in cases if c.name not in args.leave_out], relative=args.relative))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
