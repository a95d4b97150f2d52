"""Relevance speed and memory: our all-class vanilla gradient and Integrated Gradients against captum and bare torch.

Run: ``.venv/bin/python benchmarks/relevance.py`` (``--help`` for options). On a full-size case with
the demo-shaped model, on the network's input grid (the case preprocessed as the card says, padded
to a multiple of the network's stride, one forward pass over the whole volume), for the classes the
card predicts, each explained as its logits summed over its predicted region (the Agg2Exp target):

* vanilla gradient: ours (``saliency``: one forward, one backward per class) against captum
  ``Saliency`` called once per class on the same scalar, and against the floor (one forward and one
  backward per class written in bare torch); interleaved, ``--repeats`` runs each;
* Integrated Gradients, ``--steps`` points: ours (all classes per path point) against captum
  ``IntegratedGradients`` per class with ``internal_batch_size`` equal to our automatic batch;
* the product path: ``explain_case`` (the card's sliding windows, relevance back on the 1 mm case
  grid) for saliency and Integrated Gradients, and for SmoothGrad (``--case-methods smoothgrad``,
  ``--smoothgrad-samples`` noisy copies, 4 by default; run window by window, its noise drawn once on
  the whole grid).

Seconds (wall and CPU), ratios and peak resident memory (sampled every 5 ms; freed heap returned to
the system between calls). On CUDA every timed call is bracketed by ``torch.cuda.synchronize()`` and
its peak GPU memory (``torch.cuda.max_memory_allocated``) is reported too; the vanilla gradient is
then checked against the GPU target (all classes under 2 s; use ``--grid same-grid`` for the full
240 x 240 x 155 grid). Every network parameter is frozen for all sides (only input gradients).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import REALDATA, PeakRSS, machine, synthetic_case  # noqa: E402

from napari_segxai.core.attribution import explain_case, get_method  # noqa: E402
from napari_segxai.core.attribution.targets import Target  # noqa: E402
from napari_segxai.core.io.nifti import load_case  # noqa: E402
from napari_segxai.core.model.card import build_network, default_model_card  # noqa: E402
from napari_segxai.core.model.device import pick_device  # noqa: E402
from napari_segxai.core.model.preprocess import preprocess  # noqa: E402


def release_memory() -> None:
    """Collect garbage and give freed heap back to the system, so the next peak starts from the floor."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def timed(fn, device: torch.device) -> dict:
    """Wall and CPU seconds, peak RSS and its growth during one call; on CUDA synchronised, with peak GPU memory."""
    release_memory()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    gpu = torch.cuda.max_memory_allocated(device) if cuda else None
    return {"seconds": seconds, "cpu": cpu, "rss": rss.peak, "growth": rss.peak - rss.start, "gpu": gpu}


def padded(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """The image zero-padded at the end of each spatial axis to a multiple of ``multiple``."""
    pad = []
    for size in reversed(image.shape[2:]):
        pad += [0, (-size) % multiple]
    return F.pad(image, pad)


def benchmark_target(logits: torch.Tensor, classes: tuple[int, ...]) -> Target:
    """Each class's predicted region (argmax); a class predicted nowhere gets its top 0.1% logit voxels."""
    winner = logits[0].argmax(0)
    masks = []
    for c in classes:
        mask = winner == c
        if not mask.any():
            values = logits[0, c]
            mask = values >= torch.quantile(values.flatten()[::7].float(), 0.999)
        masks.append(mask.cpu().numpy())
    return Target("predicted", classes, np.stack(masks))


def summarise(runs: list[dict]) -> dict:
    """Median and minimum seconds, median CPU seconds, largest peak RSS and growth of several runs."""
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "min": min(r["seconds"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
        "all": [round(r["seconds"], 2) for r in runs],
        "rss": max(r["rss"] for r in runs),
        "growth": max(r["growth"] for r in runs),
        "gpu": None if runs[0]["gpu"] is None else max(r["gpu"] for r in runs),
    }


def row(label: str, s: dict) -> str:
    gpu = "" if s["gpu"] is None else f"; peak GPU {s['gpu'] / 2**30:.2f} GiB ({s['gpu'] / 1e9:.2f} GB)"
    return (f"  {label:44s} median {s['seconds']:7.2f} s, min {s['min']:7.2f} s (runs {s['all']}), "
            f"CPU {s['cpu']:7.2f} s; peak RSS {s['rss'] / 2**30:.2f} GiB ({s['rss'] / 1e9:.2f} GB; "
            f"+{s['growth'] / 2**30:.2f} GiB in the call){gpu}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=None,
                        help=f"a case folder or file (default: {REALDATA} when present, else a synthetic case)")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic 4 x 240 x 240 x 155 case")
    parser.add_argument("--shape", default="240,240,155", help="spatial shape of the synthetic case")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each vanilla-gradient call")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients path points")
    parser.add_argument("--ig-batch", type=int, default=0,
                        help="Integrated Gradients path points per forward pass (0: our automatic choice from free memory)")
    parser.add_argument("--parts", default="saliency,ig,case",
                        help="comma-separated: saliency (vs captum and the floor), ig (vs captum), case (explain_case)")
    parser.add_argument("--case-methods", default="saliency,integrated_gradients",
                        help="comma-separated methods timed through explain_case (part 'case'): saliency, "
                             "integrated_gradients, smoothgrad")
    parser.add_argument("--smoothgrad-samples", type=int, default=4,
                        help="SmoothGrad noisy copies (n_samples) for --case-methods smoothgrad (default 4)")
    parser.add_argument("--grid", default="card", choices=["card", "same-grid"],
                        help="card: the card as it is (2 mm); same-grid: the card's spacing removed, so the network "
                             "sees the case's own grid (240 x 240 x 155 for a BraTS case)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: CUDA, then MPS, then CPU)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")

    from captum.attr import IntegratedGradients, Saliency

    device = pick_device(args.device)
    with tempfile.TemporaryDirectory():
        card = default_model_card()
        model_source = f"the bundled demo model ({card.path})"
        if args.grid == "same-grid":
            card = dataclasses.replace(card, spacing=None)
            model_source += ", spacing removed (same grid)"
        network = build_network(card, device)
        for p in network.parameters():
            p.requires_grad_(False)
        if args.case is not None:
            case, case_source = load_case(args.case), str(args.case)
        elif REALDATA.is_dir() and not args.synthetic:
            case, case_source = load_case(REALDATA), f"real case {REALDATA.name}"
        else:
            case, case_source = synthetic_case(tuple(int(s) for s in args.shape.split(","))), "synthetic LPS 1 mm case"
        print(f"Machine: {machine()}")
        print(f"Case: {case_source}, {len(case.modalities)} x {' x '.join(map(str, case.shape))}")
        print(f"Model: {model_source}; windows {card.roi_size}, overlap {card.overlap}, "
              f"sw_batch_size {card.sw_batch_size}; device {device}")

        with torch.no_grad():
            image, grid = preprocess(case, card, device=device)
        stride = int(np.prod(card.kwargs.get("strides", [2, 2, 2]))) if card.architecture == "UNet" else 16
        x = padded(image, stride)
        with torch.no_grad():
            logits = network(x)
        classes = tuple(i for i, c in enumerate(card.classes) if c.label != 0)
        target = benchmark_target(logits, classes)
        K = len(classes)
        print(f"Network input: 1 x {x.shape[1]} x {' x '.join(map(str, x.shape[2:]))} "
              f"(case on the card's grid {' x '.join(map(str, grid.shape))}, zero-padded to a multiple of {stride}); "
              f"{K} classes, target voxels {list(target.voxel_counts)}")

        def scalars(inputs):
            return target.scalars(network(inputs))  # (B, K)

        if "saliency" in parts:
            ours_method = get_method("saliency")

            def ours():
                return ours_method.attribute(network, x, target)

            def captum_per_class():
                explainer = Saliency(scalars)
                return [explainer.attribute(x, target=k, abs=False) for k in range(K)]

            masks = torch.from_numpy(np.array(target.masks)).to(device=device, dtype=x.dtype)

            def floor():
                inputs = x.detach().requires_grad_(True)
                out = network(inputs)
                values = (out[0, list(classes)] * masks).flatten(1).sum(1)
                return [torch.autograd.grad(values[k], inputs, retain_graph=k < K - 1)[0] for k in range(K)]

            reference = ours()  # warm-up, and the three must agree
            torch.testing.assert_close(reference, torch.stack(captum_per_class())[:, 0], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(reference, torch.stack(floor())[:, 0], rtol=1e-4, atol=1e-6)
            del reference
            runs = {"ours": [], "captum": [], "floor": []}
            for _ in range(args.repeats):
                runs["ours"].append(timed(ours, device))
                runs["captum"].append(timed(captum_per_class, device))
                runs["floor"].append(timed(floor, device))
            s = {k: summarise(v) for k, v in runs.items()}
            print(f"\n[vanilla gradient, {K} classes] (the three results agree, rtol 1e-4)")
            print(row("ours (saliency, all classes)", s["ours"]))
            print(row("captum Saliency, once per class", s["captum"]))
            print(row("bare torch: 1 forward + 1 backward per class", s["floor"]))
            for key, name in (("seconds", "median"), ("min", "min"), ("cpu", "CPU")):
                print(f"  {name:6s} ours / floor {s['ours'][key] / s['floor'][key]:.2f}x (target <= 1.3x); "
                      f"captum / ours {s['captum'][key] / s['ours'][key]:.2f}x (target >= 1.25x)")
            if device.type == "cuda":
                verdict = "met" if s["ours"]["seconds"] < 2.0 else "NOT met"
                print(f"  GPU target (all {K} classes under 2 s on a full-size case): median {s['ours']['seconds']:.2f} s "
                      f"on {' x '.join(map(str, x.shape[2:]))}: {verdict}")

        if "ig" in parts:
            batch = get_method("integrated_gradients", steps=args.steps,
                               batch_size=args.ig_batch).points_per_batch(network, x, target)
            ours_ig = get_method("integrated_gradients", steps=args.steps, batch_size=batch)

            def ours():
                return ours_ig.attribute(network, x, target)

            def captum_per_class():
                explainer = IntegratedGradients(scalars)
                return [explainer.attribute(x, baselines=torch.zeros_like(x), target=k, n_steps=args.steps,
                                            method="gausslegendre", internal_batch_size=batch) for k in range(K)]

            s_ours = summarise([timed(ours, device)])
            s_captum = summarise([timed(captum_per_class, device)])
            how = "chosen" if args.ig_batch else "automatic"
            print(f"\n[Integrated Gradients, {args.steps} steps, {K} classes; {how} batch {batch} path points]")
            print(row("ours (integrated_gradients, all classes)", s_ours))
            print(row(f"captum IntegratedGradients per class (batch {batch})", s_captum))
            print(f"  captum / ours: {s_captum['seconds'] / s_ours['seconds']:.2f}x wall, "
                  f"{s_captum['cpu'] / s_ours['cpu']:.2f}x CPU")

        if "case" in parts:
            print(f"\n[explain_case: the card's sliding windows, relevance on the {' x '.join(map(str, case.shape))} case grid]")
            ig = {"steps": args.steps, **({"batch_size": args.ig_batch} if args.ig_batch else {})}
            chosen = args.case_methods.split(",")
            unknown = set(chosen) - {"saliency", "integrated_gradients", "smoothgrad"}
            if unknown:
                parser.error(f"--case-methods: unknown {sorted(unknown)}; use saliency, integrated_gradients, smoothgrad")
            smooth = {"n_samples": args.smoothgrad_samples}
            for name, params in (("saliency", {}), ("integrated_gradients", ig), ("smoothgrad", smooth)):
                if name not in chosen:
                    continue
                out = {}

                def product():
                    out["result"] = explain_case(case, card, method=name, network=network, device=device, **params)

                s = summarise([timed(product, device)])
                result = out.pop("result")
                print(row(f"{name} {params or ''}".strip(), s)
                      + f"; {(s['rss'] - s['growth']) / 2**30:.2f} GiB before the call; relevance "
                      f"{' x '.join(map(str, result.relevance.shape))}, {result.relevance.nbytes / 2**30:.2f} GiB; "
                      f"load average {os.getloadavg()[0]:.1f} after")
                del result
    return 0


if __name__ == "__main__":
    sys.exit(main())
