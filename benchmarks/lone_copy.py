"""One input at a time on the CPU: torch's own kernel choice against ``core.model.lone_copy.prefer_onednn``.

Run: ``nice -n 5 .venv/bin/python benchmarks/lone_copy.py`` (``--help`` for options). Its parts:

* ``copies``: the bundled demo UNet (or ``--model CARD``) on one random input of each ``--sides``
  cube or shape: milliseconds of a forward pass and of a forward plus backward pass of one class's summed
  logits to the input's gradient (no weight gradients, as the attribution methods run it), with
  torch's kernels (``slow_conv3d`` for these shapes) and with oneDNN, and per copy of a batch of two
  with torch's kernels; interleaved over ``--repeats`` rounds, median, each timed pass after an
  untimed one of its shape.
* ``case``: the real full-size case TCGA-DU-7294 (4 x 240 x 240 x 155) with the same model: ``segment()``
  at the card's ``sw_batch_size`` and at 1 (what nnU-Net folders and MONAI bundles use by default),
  and ``explain_case`` of saliency, Grad-CAM and LRP (window by window, one window at a time) on the
  predicted classes, each with torch's kernels and with oneDNN, alternating, ``--case-repeats`` rounds,
  the best of each; the maps' largest difference is printed with it.
* ``layers``: each distinct convolution of the network alone, at the input it gets when the network
  runs one input of each ``--sides``: milliseconds of its forward pass, and of its forward plus backward
  pass (input and weight gradients), with torch's kernels and as built, interleaved over ``--repeats``
  rounds, median: which calls gain from oneDNN and the pair, and which do not.
* ``tracin``: TracIn's gradients of one example (the same case, its predicted class regions cropped
  as ``segxai influence`` crops a query) at every recorded checkpoint, with the card's TracIn network
  on torch's kernels and on oneDNN, alternating, ``--case-repeats`` rounds, the best of each.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from batch_size import per_copy_ms

from napari_segxai.core.model.lone_copy import torch_kernels

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata" / "TCGA-DU-7294"


def both_kernels(card) -> dict[str, torch.nn.Module]:
    """The card's network twice: on torch's own kernel choice, and as built (lone inputs on oneDNN)."""
    from napari_segxai.core.model.card import build_network

    return {"torch's kernels": torch_kernels(build_network(card, "cpu")), "oneDNN": build_network(card, "cpu")}


def interleaved_ms(runs: dict, with_gradients: bool, repeats: int, weights: bool = False) -> dict:
    """Median milliseconds per copy of each ``(module, batch)`` in ``runs``, interleaved over ``repeats`` rounds,
    each timed pass after an untimed one."""
    times: dict = {key: [] for key in runs}
    for _ in range(repeats):
        for key, (module, x) in runs.items():
            per_copy_ms(module, x, with_gradients, weights)
            times[key].append(per_copy_ms(module, x, with_gradients, weights))
    return {key: statistics.median(v) for key, v in times.items()}


def copies(card, shapes: list[tuple[int, ...]], repeats: int) -> None:
    networks = both_kernels(card)
    for shape in shapes:
        x = torch.randn((2, len(card.modalities)) + shape)
        label = "x".join(map(str, shape))
        for with_gradients in (False, True):
            runs = {**{(name, 1): (network, x[:1]) for name, network in networks.items()},
                    ("torch's kernels", 2): (networks["torch's kernels"], x)}
            ms = interleaved_ms(runs, with_gradients, repeats)
            plain, fast, pair = ms[("torch's kernels", 1)], ms[("oneDNN", 1)], ms[("torch's kernels", 2)]
            kind = "forward + backward" if with_gradients else "forward"
            print(f"{label} {kind}, one input: torch's kernels {plain:.1f} ms, oneDNN {fast:.1f} ms "
                  f"({plain / fast:.2f}x); a batch of two with torch's kernels {pair:.1f} ms per copy", flush=True)


def layers(card, shapes: list[tuple[int, ...]], repeats: int) -> None:
    from napari_segxai.core.model.lone_copy import prefer_onednn

    network = both_kernels(card)["torch's kernels"]
    convolutions = [m for m in network.modules() if type(m) in (torch.nn.Conv2d, torch.nn.Conv3d)]
    for shape in shapes:
        calls = []
        hooks = [m.register_forward_pre_hook(lambda m, inputs: calls.append((m, tuple(inputs[0].shape))))
                 for m in convolutions]
        with torch.no_grad():
            network(torch.randn((1, len(card.modalities)) + shape))
        for hook in hooks:
            hook.remove()
        seen = set()
        for conv, size in calls:
            key = (size, conv.out_channels, conv.kernel_size, conv.stride)
            if key in seen:
                continue
            seen.add(key)
            x = torch.randn(size)
            runs = {"torch's kernels": (conv, x), "as built": (prefer_onednn(copy.deepcopy(conv)), x)}
            timed = []
            for with_gradients in (False, True):
                ms = interleaved_ms(runs, with_gradients, repeats, weights=True)
                plain, built = ms["torch's kernels"], ms["as built"]
                kind = "forward + backward" if with_gradients else "forward"
                timed.append(f"{kind} {plain:.2f} / {built:.2f} ms ({plain / built:.2f}x)")
            print(f"input {'x'.join(map(str, shape))}: conv {size[1]} -> {conv.out_channels}, kernel "
                  f"{'x'.join(map(str, conv.kernel_size))}, stride {'x'.join(map(str, conv.stride))}, on "
                  f"{'x'.join(map(str, size[2:]))} ({np.prod(size[2:]):,} voxels), torch's kernels / as built: "
                  + "; ".join(timed), flush=True)


def case(card, repeats: int) -> None:
    from napari_segxai.core.attribution.explain_case import explain_case
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.inference import segment

    image = load_case(REALDATA)
    networks = both_kernels(card)
    cards = {f"segment, sw_batch_size {n}": dataclasses.replace(card, sw_batch_size=n)
             for n in sorted({card.sw_batch_size, 1})}
    jobs = {label: (lambda network, c=c: segment(image, c, network=network, device="cpu").labels)
            for label, c in cards.items()}
    for method in ("saliency", "grad_cam", "lrp"):
        jobs[f"explain {method}"] = (lambda network, m=method: explain_case(
            image, card, method=m, network=network, device="cpu").relevance)
    for label, job in jobs.items():
        seconds: dict[str, list[float]] = {name: [] for name in networks}
        results = {}
        for _ in range(repeats):
            for name, network in networks.items():
                start = time.perf_counter()
                results[name] = np.asarray(job(network), dtype=np.float64)
                seconds[name].append(time.perf_counter() - start)
        plain, fast = min(seconds["torch's kernels"]), min(seconds["oneDNN"])
        a, b = results["torch's kernels"], results["oneDNN"]
        if label.startswith("segment"):
            agree = f"labels differ on {int(np.count_nonzero(a != b))} of {a.size} voxels"
        else:
            agree = f"max |diff| / max |map| {np.abs(a - b).max() / max(np.abs(a).max(), 1e-30):.1e}"
        print(f"{label}: torch's kernels {plain:.1f} s, oneDNN {fast:.1f} s ({plain / fast:.2f}x); {agree}", flush=True)


def tracin(card, repeats: int) -> None:
    from napari_segxai.core.influence.checkpoints import load_tracin_model
    from napari_segxai.core.influence.regions import prepare_example
    from napari_segxai.core.io.nifti import load_case

    model = load_tracin_model(card)
    classes = [i for i, c in enumerate(card.classes) if c.label != 0]
    example = prepare_example(load_case(REALDATA), card, model.network, classes, threshold=0.5)
    networks = {"torch's kernels": torch_kernels(copy.deepcopy(model.gradient_network)),
                "oneDNN": model.gradient_network}
    seconds: dict[str, list[float]] = {name: [] for name in networks}
    rows = {}
    for _ in range(repeats):
        for name, network in networks.items():
            model.gradient_network = network
            start = time.perf_counter()
            rows[name] = model.gradients(example)
            seconds[name].append(time.perf_counter() - start)
    plain, fast = min(seconds["torch's kernels"]), min(seconds["oneDNN"])
    a, b = rows["torch's kernels"], rows["oneDNN"]
    error = float((a - b).abs().max() / a.abs().max().clamp(min=1e-30))
    print(f"TracIn gradients of one example ({len(model.states)} checkpoints, {len(classes)} class regions, "
          f"{model.parameters:,} parameters ({model.layers}), input {tuple(example.image.shape)}): torch's kernels "
          f"{plain:.2f} s, oneDNN {fast:.2f} s ({plain / fast:.2f}x); max |diff| / max |gradient| {error:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a model card (default: the bundled demo card)")
    parser.add_argument("--parts", default="copies,case,tracin",
                        help="copies, layers, case, tracin (default copies,case,tracin)")
    parser.add_argument("--sides", default="32,48,64,96x128x128",
                        help="input cube sides or AxBxC shapes for copies (default 32,48,64,96x128x128: "
                             "the last the crop occlusion and KernelSHAP run on the full-size case)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds for copies (default 5)")
    parser.add_argument("--case-repeats", type=int, default=2, help="alternating rounds for case (default 2)")
    args = parser.parse_args()

    from napari_segxai.core.model.card import default_model_card
    from napari_segxai.core.model.loading import load_model_card

    card = load_model_card(args.model) if args.model else default_model_card()
    print(f"{platform.machine()} ({platform.processor() or 'cpu'}), {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.2f} at the start; model {card.name}")
    parts = args.parts.split(",")
    shapes = [tuple(int(v) for v in s.split("x")) if "x" in s else (int(s),) * card.spatial_dims
              for s in args.sides.split(",")]
    if "copies" in parts:
        copies(card, shapes, args.repeats)
    if "layers" in parts:
        layers(card, shapes, args.repeats)
    if "case" in parts:
        case(card, args.case_repeats)
    if "tracin" in parts:
        tracin(card, args.case_repeats)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
