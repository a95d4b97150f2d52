"""The viewer under load: the worst event-loop stall while the Explain widget works, and how fast Cancel acts.

Run: ``xvfb-run -a .venv/bin/python benchmarks/viewer.py`` (needs a display; ``make test``'s Xvfb serves).

Runs the two widget tests that measure this in a real napari viewer on the demo case
(``tests/_qt/test_responsiveness.py``: a 10 ms QTimer records its own delays while the Explain
widget explains the demo case with saliency and adds its layers; ``tests/_qt/test_cancel.py``: from
the Cancel click to the job's end, for a segmentation and a saliency explanation) and prints the
lines they measure, ``--repeats`` times.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = ("tests/_qt/test_responsiveness.py", "tests/_qt/test_cancel.py")
MEASURED = ("worst event-loop stall", "cancel took")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="how many times to run the two tests (default 3)")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    for run in range(1, args.repeats + 1):
        done = subprocess.run([sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", *TESTS],
                              cwd=ROOT, capture_output=True, text=True)
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith(MEASURED)]
        if done.returncode != 0 or len(lines) < len(MEASURED):
            print(done.stdout[-3000:] + done.stderr[-2000:])
            print(f"run {run}: the tests failed (exit {done.returncode}); no measurement.")
            return 1
        for line in lines:
            print(f"run {run}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
