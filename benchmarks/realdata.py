"""The labelled real tumour cases of ``../shared/realdata`` as an nnU-Net v2 raw training dataset.

Run: ``.venv/bin/python benchmarks/realdata.py OUT [--leave-out CASE ...]``. Writes ``OUT`` (a new
folder): ``dataset.json`` and, in ``imagesTr/`` and ``labelsTr/``, symbolic links to the case files
(nothing is copied or changed; ``--relative`` makes the links relative, as in the committed
``sample_data/realdata-tcga``, which the bundled demo model was trained on). The label is each case's ``fusion_mav`` (the majority vote of five
BraTS-2020 algorithms, the closest thing to ground truth these cases have; labels 1 necrosis,
2 oedema, 4 enhancing). ``segxai train --data OUT`` trains on it (``configs/demo3d.yaml`` says how
the bundled model was trained), and
``benchmarks/demo_quality.py --leave-one-out`` trains one model per left-out case with the same recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
LABELLED = ("TCGA-DU-7294", "TCGA-FG-6692")
"""The realdata cases with a tumour label (the BraTS-2023 case has none, the MS case is not a tumour)."""
CHANNELS = (("t1", "_t1"), ("t1ce", "_t1c"), ("t2", "_t2"), ("flair", "_fla"))
LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 4}


def build(out: Path, cases=LABELLED, realdata: Path = REALDATA, relative: bool = False) -> Path:
    """Write the nnU-Net raw dataset of ``cases`` into the new folder ``out``; ValueError if a file is missing.

    ``relative``: the links name their targets relative to where they are, so the folder works in
    any clone that has ``shared/`` beside it (how ``sample_data/realdata-tcga`` is committed).
    """
    out = Path(out).absolute()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; give a new folder.")
    if not cases:
        raise ValueError("No case left to train on.")
    for name in cases:
        files = [realdata / name / f"{name}{suffix}.nii.gz" for _, suffix in CHANNELS] + [realdata / name / "fusion_mav.nii.gz"]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise ValueError(f"Case {name}: {missing[0]} is missing (is ../shared/realdata beside the repository?).")
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)
    def link(path: Path, target: Path) -> None:
        target = target.resolve()
        path.symlink_to(os.path.relpath(target, path.parent) if relative else target)

    for name in cases:
        for index, (_, suffix) in enumerate(CHANNELS):
            link(out / "imagesTr" / f"{name}_{index:04d}.nii.gz", realdata / name / f"{name}{suffix}.nii.gz")
        link(out / "labelsTr" / f"{name}.nii.gz", realdata / name / "fusion_mav.nii.gz")
    dataset = {"channel_names": {str(i): m for i, (m, _) in enumerate(CHANNELS)}, "labels": LABELS,
               "numTraining": len(cases), "file_ending": ".nii.gz",
               "name": "realdata-tcga", "description": "TCGA glioma cases of shared/realdata, fusion_mav labels"}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2), encoding="utf-8")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="new folder for the dataset")
    parser.add_argument("--relative", action="store_true", help="links relative to OUT (a folder to commit)")
    parser.add_argument("--leave-out", nargs="*", default=[], metavar="CASE", help=f"cases to leave out ({', '.join(LABELLED)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.leave_out) - set(LABELLED))
    if unknown:
        parser.error(f"--leave-out {unknown[0]}: not one of {', '.join(LABELLED)}")
    try:
        print(build(args.out, [c for c in LABELLED if c not in args.leave_out], relative=args.relative))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
