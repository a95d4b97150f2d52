"""Time ``segment()`` on a full-size case against a bare MONAI sliding-window call, same model and grid.

Run: ``.venv/bin/python benchmarks/segment.py`` (``--help`` for options). Prints wall seconds (median
and minimum of ``--repeats`` runs) and CPU seconds (median), the ratios ours / bare, the peak
resident memory during each call and, on a GPU, the peak CUDA memory. Two configurations:

* ``card``: the model card as it is (1 mm case resampled to the card's 2 mm); the bare call runs on
  the already preprocessed tensor, so it does less work than ``segment()`` (which also reorients,
  resamples, normalises, and maps the probabilities back to the 1 mm case grid).
* ``same-grid``: the card's spacing removed, so both run over the full 240 x 240 x 155 grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from napari_segxai.core.case import Case, load_case
from napari_segxai.core.model_card import ModelCard, build_network, default_model_card, load_model_card
from napari_segxai.core.segment import activate, labels_from_probabilities, pick_device, preprocess, segment

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "TCGA-DU-7294"


def synthetic_case(shape=(240, 240, 155), modalities=("t1", "t1ce", "t2", "flair"), seed=0) -> Case:
    """A brain-sized LPS 1 mm case: smooth random intensities inside an ellipsoid, zero outside."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(1.0, 0.3, (1, len(modalities), 16, 16, 12)).astype(np.float32))
    channels = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")[0].numpy()
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    inside = sum(((g - s / 2) / (0.42 * s)) ** 2 for g, s in zip(grid, shape)) < 1
    channels *= inside
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = (120.0, 120.0, -77.0)
    return Case(channels=np.ascontiguousarray(channels), modalities=modalities, affine=affine, name="synthetic")


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 5 ms (Linux)."""

    def __init__(self):
        self.peak = self.start = 0

    @staticmethod
    def now() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        self.start = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, int, int, int, float]:
    """Wall seconds, peak RSS, peak CUDA memory (0 on CPU), RSS growth (bytes) and CPU seconds of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    cuda = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return seconds, rss.peak, cuda, rss.peak - rss.start, cpu


def compare(case: Case, card: ModelCard, network: torch.nn.Module, device: torch.device, repeats: int) -> dict:
    """Interleaved timings of ``segment()`` and the bare sliding-window call on its preprocessed input."""
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        image, grid = preprocess(case, card, device=device)

    def bare():
        with torch.inference_mode(), _autocast(device):
            return sliding_window_inference(image, card.roi_size, card.sw_batch_size, network,
                                            overlap=card.overlap, mode=card.mode)

    def ours():
        return segment(case, card, network=network, device=device)

    def pre():
        with torch.inference_mode():
            return preprocess(case, card, device=device)

    logits = bare()  # also the warm-up: thread pools, allocator, kernels

    def back():
        with torch.inference_mode():
            probabilities = grid.to_case_grid(activate(logits[0].float(), card.activation))
            return labels_from_probabilities(probabilities, card).cpu().numpy(), probabilities.cpu().numpy()

    rows = {"ours": [], "bare": [], "pre": [], "back": []}
    for _ in range(repeats):
        rows["ours"].append(measure(ours, device))
        rows["bare"].append(measure(bare, device))
        rows["pre"].append(measure(pre, device))
        rows["back"].append(measure(back, device))
    summary = {"grid": grid.shape, "case": case.shape}
    for name, runs in rows.items():
        summary[name] = {
            "seconds": statistics.median(r[0] for r in runs),
            "min": min(r[0] for r in runs),
            "cpu": statistics.median(r[4] for r in runs),
            "all": [round(r[0], 2) for r in runs],
            "rss": max(r[1] for r in runs),
            "cuda": max(r[2] for r in runs),
            "growth": max(r[3] for r in runs),
        }
    for key in ("seconds", "min", "cpu"):
        summary[f"ratio_{key}"] = summary["ours"][key] / summary["bare"][key]
    return summary


def _autocast(device: torch.device):
    """The same mixed precision segment() uses."""
    import contextlib

    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def machine() -> str:
    """CPU model, cores, threads torch uses, load, GPU."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), {gpu}; "
            f"load average {load:.1f} at start; torch {torch.__version__}, Python {platform.python_version()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=None,
                        help=f"a case folder or file (default: {REALDATA} when present, else a synthetic case)")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic 4 x 240 x 240 x 155 case")
    parser.add_argument("--shape", default="240,240,155", help="spatial shape of the synthetic case")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each call (median reported)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: CUDA, then MPS, then CPU)")
    parser.add_argument("--configs", default="card,same-grid", help="comma-separated: card, same-grid")
    parser.add_argument("--model", type=Path, default=None, help="model card (default: the bundled demo model)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    card = default_model_card() if args.model is None else load_model_card(args.model)
    model_source = "bundled demo model" if args.model is None else str(args.model)
    network = build_network(card, device)
    if args.case is not None:
        case, case_source = load_case(args.case), str(args.case)
    elif REALDATA.is_dir() and not args.synthetic:
        case, case_source = load_case(REALDATA), f"real case {REALDATA.name}"
    else:
        case, case_source = synthetic_case(tuple(int(s) for s in args.shape.split(","))), "synthetic LPS 1 mm case"
    print(f"Machine: {machine()}")
    print(f"Case: {case_source}, {len(case.modalities)} x {' x '.join(map(str, case.shape))}, "
          f"voxels {' x '.join(f'{s:.3g}' for s in case.spacing)} mm")
    print(f"Model: {model_source}; roi {card.roi_size}, overlap {card.overlap}, "
          f"sw_batch_size {card.sw_batch_size}, {card.mode}; device {device}")
    configs = {"card": card, "same-grid": dataclasses.replace(card, spacing=None)}
    for name in args.configs.split(","):
        result = compare(case, configs[name], network, device, args.repeats)
        print(f"\n[{name}] network grid {' x '.join(map(str, result['grid']))} "
              f"(case grid {' x '.join(map(str, result['case']))})")
        for which, label in (("ours", "segment()"), ("bare", "bare sliding_window_inference")):
            row = result[which]
            cuda = f", CUDA peak {row['cuda'] / 2**30:.2f} GiB" if device.type == "cuda" else ""
            print(f"  {label:30s} median {row['seconds']:6.2f} s, min {row['min']:6.2f} s "
                  f"(runs {row['all']}), CPU {row['cpu']:6.2f} s; peak RSS {row['rss'] / 2**30:.2f} GiB "
                  f"(+{row['growth'] / 2**30:.2f} during the call){cuda}")
        pre, back = result["pre"], result["back"]
        print(f"  work segment() does besides the network: preprocess() median {pre['seconds']:.2f} s, min "
              f"{pre['min']:.2f} s, CPU {pre['cpu']:.2f} s; back to the case grid (softmax, resize, labels) median "
              f"{back['seconds']:.2f} s, min {back['min']:.2f} s, CPU {back['cpu']:.2f} s")
        print(f"  ratio segment() / bare: {result['ratio_seconds']:.2f}x median wall, "
              f"{result['ratio_min']:.2f}x min wall, {result['ratio_cpu']:.2f}x CPU time (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
