"""Integrated Gradients' step count on a full-size case: seconds, completeness and agreement with a finer path, per window.

Run: ``nice -n 5 .venv/bin/python benchmarks/ig_steps.py`` (``--help`` for options). The case is
preprocessed as the bundled card says and its predicted classes are the target, exactly as
``explain_case`` does; the chosen windows are ``explain_case``'s sliding windows that meet the target.
On each window, for each step count: the seconds of ``IntegratedGradients.attribute`` (default
baseline, path warp and quadrature), the completeness error per class
(|sum of the map - (S(x) - S(x'))| / |S(x) - S(x')|), and against the finest step count the Spearman
correlation of |relevance| and the relative L1 difference of the maps, per class.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASE = ROOT.parent / "shared" / "realdata" / "TCGA-DU-7294"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default=str(DEFAULT_CASE), help="a full-size case (default TCGA-DU-7294)")
    parser.add_argument("--windows", default="0,5", help="indices of the windows that meet the target (default 0,5)")
    parser.add_argument("--steps", default="16,32,64", help="step counts; the last is the reference (default 16,32,64)")
    args = parser.parse_args()

    from napari_segxai.core.attribution import get_method
    from napari_segxai.core.attribution.case_grid import _roi
    from napari_segxai.core.attribution.explain_case import _pad_to_windows, case_target, class_indices
    from napari_segxai.core.attribution.targets import Target
    from napari_segxai.core.attribution.windows import target_windows, window_slices
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import build_network, default_model_card
    from napari_segxai.core.model.preprocess import preprocess

    steps_list = [int(s) for s in args.steps.split(",")]
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    case = load_case(args.case)
    card = default_model_card()
    network = build_network(card, "cpu")
    image, grid = preprocess(case, card, device="cpu")
    goal = case_target(case, card, image, grid, network, class_indices(card, None))
    image, goal, _ = _pad_to_windows(image, goal, card)
    windows = target_windows(window_slices(tuple(image.shape[2:]), _roi(card, image), card.overlap), goal)
    print(f"{case.name}: network grid {tuple(image.shape[1:])}, {len(windows)} windows meet the target")
    for w in (int(i) for i in args.windows.split(",")):
        window = windows[w]
        masks = goal.masks[(slice(None),) + tuple(window)]
        present = [k for k in range(len(goal.classes)) if masks[k].any()]
        local = Target(goal.kind, tuple(goal.classes[k] for k in present), masks[present], goal.threshold,
                       goal.output, goal.activation)
        x = image[(slice(None), slice(None)) + tuple(window)]
        method = get_method("integrated_gradients")
        with torch.no_grad():
            difference = (local.scalars(network(x))[0] - local.scalars(network(method.baseline_of(x)))[0]).double()
        maps = {}
        for steps in steps_list:
            start = time.perf_counter()
            maps[steps] = get_method("integrated_gradients", steps=steps).attribute(network, x, local).double()
            seconds = time.perf_counter() - start
            error = ((maps[steps].flatten(1).sum(1) - difference).abs() / difference.abs()).tolist()
            print(f"window {w} ({tuple(x.shape[1:])}, {len(present)} classes), {steps} steps: {seconds:.1f} s, "
                  f"completeness error per class {[round(e, 3) for e in error]} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        finest = maps[steps_list[-1]]
        for steps in steps_list[:-1]:
            rho = [spearmanr(maps[steps][k].abs().flatten().numpy(), finest[k].abs().flatten().numpy())[0]
                   for k in range(len(present))]
            l1 = [float((maps[steps][k] - finest[k]).abs().sum() / finest[k].abs().sum()) for k in range(len(present))]
            print(f"window {w}: {steps} against {steps_list[-1]} steps: Spearman of |relevance| "
                  f"{[round(float(r), 4) for r in rho]}, relative L1 {[round(v, 3) for v in l1]}", flush=True)


if __name__ == "__main__":
    main()
