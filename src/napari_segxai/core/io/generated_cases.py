"""Generated cases as BraTS-style folders: written with their ground truth, read back, and the demo case in the cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..training.synth import COMPARTMENTS, DEMO_SEED, GENERATOR_VERSION, SynthCase, case_name, generate_case
from .cache import cache_dir
from .nifti import load_case, save_nifti


def write_case(synth: SynthCase, folder: str | Path) -> Path:
    """Write a case as a BraTS-style folder (``<name>_t1.nii.gz`` ... ``<name>_seg.nii.gz``, ground_truth.json)."""
    folder = Path(folder).expanduser()
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} already exists and is not empty; choose a new output folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        case = synth.case
        for modality, channel in zip(case.modalities, case.channels):
            save_nifti(channel, case.affine, tmp / f"{case.name}_{modality}.nii.gz")
        save_nifti(case.label.astype(np.int16), case.affine, tmp / f"{case.name}_seg.nii.gz")
        truth = {
            "name": case.name,
            "seed": synth.seed,
            "modalities": list(case.modalities),
            "labels": {str(k): v for k, v in COMPARTMENTS.items()},
            "modality_signature": synth.modality_signature,
            "signature_definition": "(mean of the class - mean of tumour-free brain) / SD of tumour-free brain, per z-scored modality",
            "params": synth.params,
        }
        (tmp / "ground_truth.json").write_text(json.dumps(truth, indent=2))
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


#: The demo case's grid: the 1 mm template, so overlays are smooth at full screen (the model resamples it to 2 mm).
DEMO_SIZE = "1mm"


def demo_case_path() -> Path:
    """The demo case folder (fixed held-out seed, 1 mm), written once into the user cache folder (about 30 s).

    Made without the thick-slice blur its seed draws (smeared along one axis, the case looks streaky at full
    screen); everything else is the generator's case of that seed.
    """
    folder = cache_dir() / f"demo-case-v{GENERATOR_VERSION}-{DEMO_SIZE}-thin" / case_name(DEMO_SEED, DEMO_SIZE)
    if folder.is_dir() and (folder / "ground_truth.json").exists():
        return folder
    synth = generate_case(DEMO_SEED, size=DEMO_SIZE, thick_slices=False)
    try:
        write_case(synth, folder)
    except (ValueError, OSError):
        if not (folder / "ground_truth.json").exists():  # another process may have written it meanwhile
            raise
    return folder


def read_ground_truth(folder: str | Path) -> dict:
    """The ``ground_truth.json`` of a generated case folder."""
    path = Path(folder) / "ground_truth.json"
    if not path.exists():
        raise ValueError(f"{folder} has no ground_truth.json; it is not a generated case folder.")
    return json.loads(path.read_text())


def load_synth_case(folder: str | Path) -> SynthCase:
    """A generated case read back from its folder, with its recorded signature and parameters."""
    truth = read_ground_truth(folder)
    return SynthCase(load_case(folder), truth["modality_signature"], int(truth["seed"]), truth["params"])
