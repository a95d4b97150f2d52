"""Time ``segment()`` on a full-size case against a bare MONAI sliding-window call, same model and grid.

Run: ``.venv/bin/python benchmarks/segment.py`` (``--help`` for options). Prints wall seconds (median
and minimum of ``--repeats`` runs) and CPU seconds (median), the ratios ours / bare, the peak
resident memory during each call and, on a GPU, the peak CUDA memory. Two configurations:

* ``card``: the model card as it is (1 mm case resampled to the card's 2 mm); the bare call runs on
  the already preprocessed tensor, so it does less work than ``segment()`` (which also reorients,
  resamples, normalises, and maps the probabilities back to the 1 mm case grid).
* ``same-grid``: the card's spacing removed, so both run over the full 240 x 240 x 155 grid.

Two more parts, each on the ``card`` configuration, instead of the comparison unless ``--configs``
is given too:

* ``--profile``: ``cProfile`` with ``time.process_time`` over ``--profile-calls`` calls of
  ``segment()`` (after one warm-up call), grouped into the network's operators, the rest of the
  sliding window (MONAI's blending and window coordinates, module calls) and ``segment()``'s own
  work (each resize, the z-score, the labels, flips, softmax, copies); CPU seconds per call.
* ``--steps``: the pieces of mapping the class probabilities back to the case grid, one at a time on
  one thread, CPU seconds (minimum of ``--step-repeats``): the trilinear resize, the labels (the
  running argmax ``segment()`` uses, ``torch.argmax(dim=0)``, a pairwise tournament, the running
  argmax over cache-sized slabs), writing an array of the probabilities' size, and a separable
  resize for comparison; the alternatives are checked against what ``segment()`` returns.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import platform
import pstats
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from napari_segxai.core.case import Case
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.card import ModelCard, build_network, default_model_card
from napari_segxai.core.model.loading import load_model_card  # noqa: E402
from napari_segxai.core.model.preprocess import _inverse_ornt, _reorient, _resize, preprocess
from napari_segxai.core.model.inference import activate, labels_from_probabilities, segment
from napari_segxai.core.model.device import pick_device

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


NETWORK_OPERATORS = ("conv3d", "instance_norm", "conv_transpose3d", "prelu", "cat", "conv2d", "conv_transpose2d")
"""Torch operators whose own time counts as the network's in the profile (built-in methods of ``torch``)."""


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def profile_segment(case: Case, card: ModelCard, network: torch.nn.Module, device: torch.device, calls: int) -> None:
    """Print where ``segment()``'s CPU time goes (cProfile, process time), per call, grouped."""
    from napari_segxai.core.model import inference, preprocess

    segment(case, card, network=network, device=device)  # warm-up
    profiler = cProfile.Profile(time.process_time)
    start_wall, load_before = time.perf_counter(), _load()
    profiler.enable()
    for _ in range(calls):
        segment(case, card, network=network, device=device)
    profiler.disable()
    wall = time.perf_counter() - start_wall
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    ours = {str(Path(module.__file__).resolve()) for module in (inference, preprocess)}

    def own(name: str) -> tuple:
        keys = [k for k in stats if k[2] == name and str(Path(k[0]).resolve()) in ours]
        if len(keys) != 1:
            raise RuntimeError(f"expected one profile entry for core.model.{name}, found {keys}")
        return keys[0]

    def cumulative(name: str) -> float:
        return stats[own(name)][3] / calls

    def cumulative_from(name: str, caller: str) -> float:
        callers = stats[own(name)][4]
        return sum(v[3] for k, v in callers.items() if k == own(caller)) / calls

    def builtin(op: str) -> float:
        return sum(v[2] for k, v in stats.items() if k[0] == "~" and k[2] == f"<built-in method torch.{op}>") / calls

    total, window = cumulative("segment"), cumulative("infer")
    operators = {op: builtin(op) for op in NETWORK_OPERATORS}
    operators = {op: t for op, t in operators.items() if t >= 0.005}
    rest_window = window - sum(operators.values())
    pieces = {
        "resize of the input (1 mm -> network grid)": cumulative_from("_resize", "preprocess"),
        "resize of the class probabilities (network grid -> case grid)": cumulative_from("_resize", "to_case_grid"),
        "z-score (_normalize)": cumulative("_normalize"),
        "labels (running argmax, labels_from_probabilities)": cumulative("labels_from_probabilities"),
        "flips and axis order (_reorient)": cumulative("_reorient"),
        "softmax (activate)": cumulative("activate"),
    }
    others = total - window - sum(pieces.values())
    own_work = total - window
    print(f"\n[profile] cProfile (timer time.process_time), {calls} calls of segment() after one warm-up, "
          f"network grid {' x '.join(map(str, preprocess_shape(case, card)))}; {wall:.1f} s wall for the {calls} calls; "
          f"load average {load_before} before, {_load()} after")
    print(f"  CPU seconds per call: segment() {total:.2f}")
    print(f"    network and MONAI's sliding window (infer) {window:.2f}: "
          + ", ".join(f"{op} {t:.2f}" for op, t in operators.items())
          + f", the rest (blending, window coordinates, module calls) {rest_window:.2f}")
    print(f"    segment()'s own work {own_work:.2f}: " + ", ".join(f"{k} {v:.2f}" for k, v in pieces.items())
          + f", everything else (copies to numpy, checks, grid) {others:.2f}")
    print(f"  segment() / its sliding window: {total / window:.2f}x in profiled CPU time (target <= 1.3x)")


def preprocess_shape(case: Case, card: ModelCard) -> tuple[int, ...]:
    from napari_segxai.core.model.preprocess import network_grid

    return network_grid(case, card).shape


def tournament_argmax(probabilities: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Labels by a pairwise tree of comparisons (0 vs 1, 2 vs 3, then the winners); ties go to the lower class."""
    entries = [(probabilities[k], values[k]) for k in range(probabilities.shape[0])]
    while len(entries) > 1:
        paired = []
        for i in range(0, len(entries) - 1, 2):
            (low, low_label), (high, high_label) = entries[i], entries[i + 1]
            better = high > low
            paired.append((torch.where(better, high, low), torch.where(better, high_label, low_label)))
        if len(entries) % 2:
            paired.append(entries[-1])
        entries = paired
    label = entries[0][1]
    return label if label.dim() else label.expand(probabilities.shape[1:]).clone()


def slab_argmax(probabilities: torch.Tensor, card: ModelCard, slab_bytes: int = 1 << 20) -> torch.Tensor:
    """The running argmax of ``segment()`` over slabs of the first spatial axis, each about ``slab_bytes``."""
    per_row = probabilities[:, 0].numel() * probabilities.element_size()
    rows = max(1, slab_bytes // per_row)
    labels = torch.empty(probabilities.shape[1:], dtype=torch.int16)
    for i in range(0, probabilities.shape[1], rows):
        labels[i:i + rows] = labels_from_probabilities(probabilities[:, i:i + rows], card)
    return labels


def separable_resize(small: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(K, x, y, z) -> (K, *shape): bilinear over y, z, then linear over x (voxel centres, like trilinear)."""
    K, x = small.shape[:2]
    middle = torch.nn.functional.interpolate(small.reshape(1, K * x, *small.shape[2:]), size=tuple(shape[1:]),
                                             mode="bilinear", align_corners=False).reshape(K, x, *shape[1:])
    source = ((torch.arange(shape[0], dtype=torch.float64) + 0.5) * (x / shape[0]) - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=x - 1)
    high = (low + 1).clamp(max=x - 1)
    weight = (source - low).to(small.dtype).view(1, -1, 1, 1)
    out = middle.index_select(1, low)
    upper = middle.index_select(1, high)
    return out.add_(upper.sub_(out).mul_(weight))


def one_step_table(case: Case, card: ModelCard, network: torch.nn.Module, device: torch.device, repeats: int) -> None:
    """Print the CPU seconds of each piece of going back to the case grid, on one thread."""
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        image, grid = preprocess(case, card, device=device)
        logits = sliding_window_inference(image, card.roi_size, card.sw_batch_size, network,
                                          overlap=card.overlap, mode=card.mode)
        small = _reorient(activate(logits[0].float(), card.activation), _inverse_ornt(grid.orientation)).cpu()
    shape = tuple(grid.case_shape)
    values = torch.tensor(card.label_values, dtype=torch.int16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            probabilities = _resize(small, shape, "linear")
            reference = labels_from_probabilities(probabilities, card)
            steps = {
                "trilinear resize of the probabilities (F.interpolate, as segment() does)":
                    lambda: _resize(small, shape, "linear"),
                "labels: running argmax in place (labels_from_probabilities, as segment() does)":
                    lambda: labels_from_probabilities(probabilities, card),
                "labels: torch.argmax(dim=0)": lambda: torch.argmax(probabilities, dim=0),
                "labels: pairwise tree (0 vs 1, 2 vs 3, winners)": lambda: tournament_argmax(probabilities, values),
                "labels: running argmax over cache-sized slabs (1 MiB)": lambda: slab_argmax(probabilities, card),
                "writing an array that size (empty_like(...).fill_(0)), for scale":
                    lambda: torch.empty_like(probabilities).fill_(0),
                "separable resize (bilinear over y, z, then linear over x), for comparison":
                    lambda: separable_resize(small, shape),
            }
            checks = {
                "labels: torch.argmax(dim=0)": "same labels" if torch.equal(values[torch.argmax(probabilities, dim=0)],
                                                                            reference) else "DIFFERENT labels",
                "labels: pairwise tree (0 vs 1, 2 vs 3, winners)":
                    "same labels" if torch.equal(tournament_argmax(probabilities, values), reference) else "DIFFERENT labels",
                "labels: running argmax over cache-sized slabs (1 MiB)":
                    "same labels" if torch.equal(slab_argmax(probabilities, card), reference) else "DIFFERENT labels",
                "separable resize (bilinear over y, z, then linear over x), for comparison":
                    f"max difference from trilinear {float((separable_resize(small, shape) - probabilities).abs().max()):.1e}",
            }
            results = {}
            for name, fn in steps.items():
                cpu, wall = [], []
                for _ in range(repeats):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    out = fn()
                    cpu.append(time.process_time() - cpu_start)
                    wall.append(time.perf_counter() - start)
                    del out
                results[name] = (min(cpu), min(wall))
    finally:
        torch.set_num_threads(threads)
    print(f"\n[steps] back to the case grid, one piece at a time on 1 thread, minimum of {repeats} "
          f"(load average {_load()} after): {small.shape[0]} classes, {' x '.join(map(str, small.shape[1:]))} -> "
          f"{' x '.join(map(str, shape))}, {probabilities.nbytes / 1e6:.0f} MB of float32 out")
    print(f"  {'step':82s} {'CPU s':>7s} {'wall s':>7s}  check")
    for name, (cpu, wall) in results.items():
        print(f"  {name:82s} {cpu:7.3f} {wall:7.3f}  {checks.get(name, '')}")


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
    parser.add_argument("--configs", default=None,
                        help="comma-separated: card, same-grid (default both, or none with --profile / --steps)")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile breakdown of segment() on the card configuration (CPU seconds per call)")
    parser.add_argument("--profile-calls", type=int, default=2, help="profiled calls of segment() (default 2)")
    parser.add_argument("--steps", action="store_true",
                        help="one-step table: each piece of mapping the probabilities back to the case grid, 1 thread")
    parser.add_argument("--step-repeats", type=int, default=5, help="runs of each step (minimum reported, default 5)")
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
    if card.spatial_dims == 3:
        from napari_segxai.core.model.inference import count_windows
        from napari_segxai.core.model.preprocess import network_grid

        counts = {name: count_windows(network_grid(case, c).shape, c.roi_size, c.overlap)
                  for name, c in (("card", card), ("same-grid", dataclasses.replace(card, spacing=None)))}
        print(f"Windows per call: {counts['card']} on the card's grid, {counts['same-grid']} on the case grid (same-grid)")
    configs = {"card": card, "same-grid": dataclasses.replace(card, spacing=None)}
    chosen = args.configs if args.configs is not None else ("" if args.profile or args.steps else "card,same-grid")
    for name in [c for c in chosen.split(",") if c]:
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
    if args.profile:
        profile_segment(case, card, network, device, args.profile_calls)
    if args.steps:
        one_step_table(case, card, network, device, args.step_repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
