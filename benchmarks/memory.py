"""Peak memory of every ``segxai`` command on a full-size case, each in its own process.

Run: ``.venv/bin/python benchmarks/memory.py`` (``--help`` for options; ``--with "--model FOLDER --folds 0"``
runs every command with another model, an nnU-Net folder for one). Each command runs as a
child process (``segxai <command> CASE --out <tmp> ...``) and its peak resident set size comes from
the kernel's accounting for that child (``os.wait4``'s ``ru_maxrss``), so nothing is sampled and
nothing is missed. The first row, ``segxai --help``, is the floor: the interpreter and the imports.
Prints, per command: exit status, wall seconds, peak RSS and its share of the memory available
when the run started; for ``explain`` rows also what its JSON record says: the cost estimated before
the attribution started (seconds, forward and backward passes, working memory; attribution plus the
sequences' Shapley values) beside the measured seconds of the explanation (preprocessing and
segmentation included), and the settings the method chose.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEGXAI = [str(Path(sys.executable).with_name("segxai"))]  # the console script beside this interpreter
DEFAULT_CASE = ROOT.parent / "shared" / "realdata" / "TCGA-DU-7294"

# (label, arguments after the case); "{out}" is a fresh output folder per command.
COMMANDS = (
    ("segment", ["segment", "{case}", "--out", "{out}"]),
    *((f"explain {m}", ["explain", "{case}", "--method", m, "--out", "{out}"]) for m in (
        "saliency", "gradient_x_input", "smoothgrad", "integrated_gradients", "grad_cam", "occlusion",
        "guided_backprop", "deconvolution", "deeplift", "lrp", "kernel_shap", "meaningful_perturbation",
        "modality_shapley")),
    ("influence", ["influence", "{case}", "--out", "{out}"]),
    ("trust saliency (sanity + metrics)", ["trust", "{case}", "--methods", "saliency", "--out", "{out}"]),
    ("report", ["report", "{case}", "--out", "{out}"]),
)


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (bytes)."""
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def run_child(argv: list[str], log: Path) -> tuple[int, float, int]:
    """Run ``argv``; its exit status, wall seconds and peak RSS in bytes (the kernel's ru_maxrss)."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - start, usage.ru_maxrss * 1024


def explain_line(out: Path) -> str:
    """The estimate against the measurement, from an explain run's JSON record."""
    import json

    record = json.loads(next(out.glob("*.json")).read_text())
    cost = record.get("cost_estimate") or {}
    chosen = {k: v for k, v in (cost.get("parameters") or {}).items()
              if k in ("window", "stride", "cube", "n_samples", "iterations", "steps")}
    return (f"estimated {cost.get('seconds', float('nan')):.0f} s ({cost.get('forward_passes')} forward, "
            f"{cost.get('backward_passes')} backward passes of {cost.get('pass_shape')} x {cost.get('windows')}, "
            f"{cost.get('peak_bytes', 0) / 2**30:.2f} GiB working) vs explain_case {record['seconds']:.0f} s; {chosen}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE, help=f"a full-size case (default {DEFAULT_CASE})")
    parser.add_argument("--only", default=None, metavar="LABELS",
                        help="comma-separated row labels to run (default: all); e.g. 'segment,report'")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a method parameter for every explain row run (segxai explain --param), e.g. steps=32 "
                             "with --only 'explain integrated_gradients'; repeatable")
    parser.add_argument("--with", dest="extra", default="", metavar="ARGS",
                        help="arguments added to every command, e.g. \"--model FOLDER --folds 0 --no-mirroring\" "
                             "for an nnU-Net model folder (default: the bundled demo model)")
    args = parser.parse_args()
    if not args.case.exists():
        parser.error(f"{args.case} does not exist; give a full-size case with --case.")
    wanted = None if args.only is None else {s.strip() for s in args.only.split(",")}
    rows = [("segxai --help (interpreter + imports)", ["--help"])] + [
        (label, argv) for label, argv in COMMANDS if wanted is None or label in wanted]
    import nibabel as nib

    from napari_segxai.core.io.nifti import load_case

    shape = load_case(args.case).channels.shape
    print(f"case: {args.case} {shape}; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, {available_bytes() / 2**30:.1f} GiB available; nibabel {nib.__version__}")
    print(f"{'command':<38} {'exit':>4} {'seconds':>8} {'peak RSS':>10} {'of available':>12}")
    with tempfile.TemporaryDirectory() as scratch:
        for i, (label, template) in enumerate(rows):
            out = Path(scratch) / f"out{i}"
            argv = SEGXAI + [a.format(case=args.case, out=out) for a in template]
            if template[0] != "--help":
                argv += shlex.split(args.extra)
            if template[0] == "explain":
                argv += [a for p in args.param for a in ("--param", p)]
            free = available_bytes()
            status, seconds, peak = run_child(argv, Path(scratch) / f"log{i}.txt")
            print(f"{label:<38} {status:>4} {seconds:>8.1f} {peak / 2**30:>8.2f} GiB {peak / free:>11.0%}", flush=True)
            if status != 0:
                print("    " + (Path(scratch) / f"log{i}.txt").read_text(errors="replace").strip().splitlines()[-1])
            elif template[0] == "explain":
                print("    " + explain_line(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
