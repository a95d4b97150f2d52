"""Cohort runner speed: cases per minute on one and two dask workers, and the runner's per-case overhead.

Run: ``.venv/bin/python benchmarks/cohort.py`` (``--help`` for options). Generates ``--count``
demo-size cases (``generate_case(seed)``: MNI152 at 2 mm, 99 x 117 x 95, four modalities, a
reference label) and explains them with the bundled demo model (``--method``, default saliency):

* direct: one process calls ``load_case``, ``segment()``, ``explain_case()`` (the predicted
  classes), ``case_regions()`` and ``roi_importance()`` per case with one network built once, torch
  on every core; no files written. This is the floor the runner is compared with.
* runner, 1 worker and 2 workers: ``run_cohort()`` on its default LocalCluster (worker processes,
  torch threads = cores / workers), into a fresh output folder each time: wall time from the call to
  its return (cluster start, worker imports, model load, the cases, the files, cluster shutdown),
  and the steady rate: the mean interval between finished cases once every worker has finished its
  first case (which includes the model load).

Prints seconds, cases per minute, the ratios (2 workers / 1 worker, runner / direct) and the
per-case overhead of the runner (its steady seconds per case per worker minus the direct seconds
per case).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def generate(folder: Path, count: int, size: str, first_seed: int) -> Path:
    """Write ``count`` generated cases into ``folder`` (one BraTS-style sub-folder each)."""
    from napari_segxai.core.training.synth import generate_case
    from napari_segxai.core.io.generated_cases import write_case

    for seed in range(first_seed, first_seed + count):
        synth = generate_case(seed, size=size)
        write_case(synth, folder / synth.case.name)
    return folder


def direct(cases_dir: Path, card_path: Path, method: str) -> list[float]:
    """Seconds per case of load + segment + explain + regions + RoI importance, in this process, network built once."""
    import numpy as np

    from napari_segxai.core.attribution import explain_case
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.cohort import find_cases
    from napari_segxai.core.model.card import build_network
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.roi import case_regions, roi_importance
    from napari_segxai.core.model.device import pick_device
    from napari_segxai.core.model.inference import segment

    card = load_model_card(card_path)
    device = pick_device(None)
    network = build_network(card, device)
    seconds = []
    for case in find_cases(cases_dir):
        start = time.perf_counter()
        image = load_case(case.path)
        seg = segment(image, card, network=network, device=device)
        present = set(np.unique(seg.labels).tolist())
        classes = [i for i, c in enumerate(card.classes) if c.label != 0 and c.label in present]
        relevance = explain_case(image, card, method=method, classes=classes, network=network, device=device)
        roi_importance(relevance, case_regions(seg.labels, card.classes, channels=image.channels))
        seconds.append(time.perf_counter() - start)
        print(f"  direct {case.case_id}: {seconds[-1]:.1f} s", flush=True)
    return seconds


def runner(cases_dir: Path, out: Path, card_path: Path, method: str, workers: int) -> dict:
    """Wall seconds of run_cohort on a fresh LocalCluster of ``workers`` workers, with each case's finishing time."""
    from napari_segxai.core.cohort import CohortSettings, run_cohort

    finished: list[float] = []
    inside: list[float] = []
    seen_pids: set[int] = set()
    start = time.perf_counter()

    def on_result(record: dict) -> None:
        finished.append(time.perf_counter() - start)
        if record["status"] == "done":
            if record["worker_pid"] in seen_pids:  # a worker's first case also loads the model: left out
                inside.append(record["seconds"]["total"])
            seen_pids.add(record["worker_pid"])
        print(f"  {workers} worker(s) {record['case']}: {record['status']} at {finished[-1]:.1f} s", flush=True)

    run = run_cohort(cases_dir, out, CohortSettings(str(card_path), method=method), workers=workers,
                     memory_limit="auto", on_result=on_result)
    wall = time.perf_counter() - start
    if run.failed:
        raise SystemExit(f"cases failed: {run.failed}")
    n = len(finished)
    k = min(run.workers, n - 1)  # from the time every worker has finished its first case
    steady = (finished[-1] - finished[k - 1]) / (n - k) if n > k >= 1 else float("nan")
    return {"wall": wall, "finished": finished, "inside": inside, "steady": steady, "workers": run.workers, "n": n}


def main(argv=None) -> int:
    from napari_segxai.core.io.paths import sample_data_dir
    from segment import machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=6, help="number of generated cases (default 6)")
    parser.add_argument("--size", choices=["full", "toy"], default="full",
                        help="generated case size: full (99 x 117 x 95, default) or toy (32^3, for a quick check)")
    parser.add_argument("--cases", type=Path, default=None, help="use this folder of cases instead of generating them")
    parser.add_argument("--model", type=Path, default=None, metavar="CARD",
                        help="model card (default: the bundled demo model, sample_data/models/demo3d/card.yaml)")
    parser.add_argument("--method", default="saliency", help="attribution method (default saliency)")
    parser.add_argument("--seed", type=int, default=910_000, help="first seed of the generated cases (default 910000)")
    args = parser.parse_args(argv)

    card = args.model or sample_data_dir() / "models" / "demo3d" / "card.yaml"
    print(f"machine: {machine()}")
    print(f"model: {card}; method: {args.method}")
    with tempfile.TemporaryDirectory(prefix="segxai-cohort-bench-") as tmp:
        tmp = Path(tmp)
        if args.cases is None:
            t = time.perf_counter()
            cases = generate(tmp / "cases", args.count, args.size, args.seed)
            print(f"generated {args.count} {args.size} cases in {time.perf_counter() - t:.1f} s")
        else:
            cases = args.cases
        print("direct (this process, network built once):", flush=True)
        direct_s = direct(cases, card, args.method)
        results = {}
        for workers in (1, 2):
            print(f"runner, LocalCluster with {workers} worker process(es):", flush=True)
            results[workers] = runner(cases, tmp / f"out{workers}", card, args.method, workers)
        load = os.getloadavg()[0]

    n = len(direct_s)
    d_mean = statistics.mean(direct_s)
    print()
    print(f"cases: {n}; load average at the end {load:.1f}")
    print(f"direct:          {d_mean:6.1f} s per case (median {statistics.median(direct_s):.1f}), "
          f"{60 / d_mean:5.2f} cases/min")
    for workers, r in results.items():
        print(f"runner {workers} worker(s): wall {r['wall']:6.1f} s = {60 * r['n'] / r['wall']:5.2f} cases/min end to end; "
              f"first case at {r['finished'][0]:.1f} s (start-up + model load + one case); steady "
              f"{r['steady']:.1f} s between cases = {60 / r['steady']:5.2f} cases/min; "
              f"in-worker {_mean(r['inside']):.1f} s per case (each worker's first case left out)")
    one, two = results[1], results[2]
    print(f"2 workers / 1 worker: {one['wall'] / two['wall']:.2f}x end to end, {one['steady'] / two['steady']:.2f}x steady")
    overhead_steady = one["steady"] - d_mean
    print(f"runner (1 worker) / direct: {one['steady'] / d_mean:.2f}x steady; per-case overhead {overhead_steady:+.1f} s "
          f"steady, {one['wall'] / n - d_mean:+.1f} s end to end (start-up spread over {n} cases); in-worker work "
          f"{_mean(one['inside']) - d_mean:+.1f} s per case beyond direct (files, Dice)")
    return 0


def _mean(values) -> float:
    """The mean, nan for no values."""
    return statistics.mean(values) if values else float("nan")


if __name__ == "__main__":
    sys.exit(main())
