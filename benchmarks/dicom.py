"""Opening a DICOM study: napari-segxai's ``load_case`` against dcm2niix converting the same series.

The study is the real TCGA-DU-7294 case (``../shared/realdata``: four 240 x 240 x 155 volumes at 1 mm)
written as four axial MR series of single-frame DICOM files with pydicom (``tests/_dicom.py``; 620 files),
plus ``--synthetic`` a random study of the same size when the real case is absent. Timed, interleaved,
median of ``--repeats`` after one warm-up:

- ours: ``load_case(STUDY)`` (read every header, group, map the series to modalities, read the pixels,
  put the four series on one grid: here the same grid, so no resampling), in this process;
- reading: ``read_study(STUDY)`` and ``read_series`` of each series (the DICOM reading alone, without
  ``load_case``'s mapping, stacking and head-mask agreement check), in this process;
- dcm2niix: ``dcm2niix -z n -b n -o OUT STUDY`` (uncompressed NIfTI, no sidecars), as a subprocess.

Prints seconds, the ratios ours / dcm2niix and reading / dcm2niix (goal at most 1.5x) and the peak
resident memory of each (ours: growth of this process's peak during the first call; dcm2niix: the
child's ``ru_maxrss``).

Run: ``.venv/bin/python benchmarks/dicom.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
REAL = ROOT.parent / "shared" / "realdata" / "TCGA-DU-7294"


def _study(root: Path, synthetic: bool) -> Path:
    from _dicom import write_series

    from napari_segxai.core.io.nifti import load_case

    if synthetic or not REAL.is_dir():
        rng = np.random.default_rng(0)
        channels = [rng.normal(300, 50, size=(240, 240, 155)).clip(0, 3000).astype(np.float32) for _ in range(4)]
        names = ("t1", "t1ce", "t2", "flair")
    else:
        case = load_case(REAL)
        channels, names = list(case.channels), case.modalities
    descriptions = {"t1": "T1 SE AX", "t1ce": "T1 SE AX POST GD", "t2": "T2 TSE AX", "flair": "T2 FLAIR AX"}
    for number, (name, volume) in enumerate(zip(names, channels), start=2):
        scale = max(float(np.abs(volume).max()) / 30000.0, 1e-3)
        write_series(root / name, np.asarray(volume, dtype=np.float32), description=descriptions[name],
                     number=number, spacing=(1.0, 1.0, 1.0), origin=(-120.0, -120.0, -77.0), slope=scale,
                     study_uid="1.2.826.0.1.3680043.8.498.1")
    return root


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    from napari_segxai.core.io.dicom import read_series, read_study
    from napari_segxai.core.io.nifti import load_case

    def read(study: Path) -> list:
        return [read_series(series) for series in read_study(study).series]

    binary = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    load = os.getloadavg()[0]
    print(f"# benchmarks/dicom.py\nMachine: {platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores; "
          f"load average {load:.1f}; Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        start = time.perf_counter()
        study = _study(scratch / "study", args.synthetic)
        files = sum(1 for p in study.rglob("*.dcm"))
        print(f"Study: {files} files in 4 series ({'synthetic' if args.synthetic or not REAL.is_dir() else 'TCGA-DU-7294'}),"
              f" written in {time.perf_counter() - start:.1f} s")

        def dcm2niix() -> tuple[float, float]:
            out = scratch / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            before = time.perf_counter()
            subprocess.run([binary, "-z", "n", "-b", "n", "-o", str(out), str(study)], check=True, capture_output=True)
            return time.perf_counter() - before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0

        base = _rss_mb()
        before = time.perf_counter()
        case = load_case(study)
        first = time.perf_counter() - before
        ours_peak = _rss_mb() - base
        _, theirs_peak = dcm2niix()
        ours, reading, theirs = [], [], []
        for _ in range(args.repeats):
            before = time.perf_counter()
            load_case(study)
            ours.append(time.perf_counter() - before)
            before = time.perf_counter()
            read(study)
            reading.append(time.perf_counter() - before)
            theirs.append(dcm2niix()[0])
    o, r, t = statistics.median(ours), statistics.median(reading), statistics.median(theirs)
    print(f"case: {case.name}, modalities {', '.join(case.modalities)}, shape {case.shape}")
    print("ours s (median) | first call s | reading s (median) | dcm2niix s (median) | ours / dcm2niix | "
          "reading / dcm2niix | ours peak RSS growth MB | dcm2niix peak RSS MB")
    print(f"{o:.3f} | {first:.3f} | {r:.3f} | {t:.3f} | {o / t:.2f}x | {r / t:.2f}x | {ours_peak:.0f} | {theirs_peak:.0f}")


if __name__ == "__main__":
    main()
