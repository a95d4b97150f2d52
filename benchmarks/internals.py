"""Inside the network (issue 22) on a full-size case: feature maps of every layer, activation maximisation per class,
surrogate fit time and fidelity on held-out generated cases.

Run: ``.venv/bin/python benchmarks/internals.py`` (``--help`` for options). Prints, per layer: channels,
when :func:`iter_feature_maps` had it ready (every layer shares the sliding passes; preprocessing, windows,
statistics and the kept channels put on the case grid) and the process's peak resident memory so far
(``ru_maxrss``; it only grows, so a layer that raises it is the one that needed it); per foreground class: seconds and objective of
:func:`maximise_case`; per surrogate kind: fit seconds, fidelity on the held-out voxels of the case it was
fitted on, and fidelity on other generated cases (seeds the demo model was not trained on).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASE = ROOT.parent / "shared" / "realdata" / "TCGA-DU-7294"
HELD_OUT_SEEDS = (5000, 5001, 5002)


def peak_gib() -> float:
    """The process's peak resident set size so far, GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE, help=f"a full-size case (default {DEFAULT_CASE})")
    parser.add_argument("--limit", type=int, default=0,
                        help="time only this many layers, evenly spread over the tree (default 0: every layer)")
    parser.add_argument("--steps", type=int, default=32, help="activation maximisation steps per class (default 32)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["features", "maximise", "surrogate"])
    args = parser.parse_args()
    if not args.case.exists():
        parser.error(f"{args.case} does not exist; give a full-size case with --case.")

    import numpy as np
    import torch

    from napari_segxai.core.internals.case_maximise import maximise_case
    from napari_segxai.core.internals.case_surrogate import case_surrogate, network_view
    from napari_segxai.core.internals.features import MAP_BUDGET_BYTES, iter_feature_maps
    from napari_segxai.core.internals.layers import feature_layers
    from napari_segxai.core.internals.outputs import card_layer_tree
    from napari_segxai.core.internals.surrogate import measure_fidelity, voxel_features
    from napari_segxai.core.internals.windowed import plan_passes
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import build_network, default_model_card
    from napari_segxai.core.model.preprocess import network_grid
    from napari_segxai.core.training.synth import generate_case

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}; load {os.getloadavg()}")
    card = default_model_card()
    network = build_network(card, "cpu")
    case = load_case(args.case)
    print(f"case {case.name} {case.shape}; model {card.name}; peak so far {peak_gib():.2f} GiB")

    if "features" not in args.skip:
        layers = feature_layers(card_layer_tree(card, network), 3)
        if args.limit:
            picks = np.unique(np.linspace(0, len(layers) - 1, args.limit).round().astype(int))
            layers = tuple(layers[i] for i in picks)
        passes = plan_passes([(info.name, info.channels) for info in layers], int(np.prod(
            network_grid(case, card).shape)), MAP_BUDGET_BYTES)
        print(f"\nfeature maps of {len(layers)} layers, {sum(i.channels for i in layers)} channels, sharing "
              f"{len(passes)} sliding passes of at most {MAP_BUDGET_BYTES / 1e9:g} GB of maps")
        print("| layer | type | channels | ready after (s) | peak RSS so far (GiB) |\n|---|---|---|---|---|")
        began = time.perf_counter()
        for maps in iter_feature_maps(case, card, [info.name for info in layers], network=network, device="cpu"):
            print(f"| {maps.layer} | {maps.kind} | {maps.n_channels} | {maps.seconds:.1f} | {peak_gib():.2f} |",
                  flush=True)
            del maps
        total = time.perf_counter() - began
        print(f"all {len(layers)} layers: {total:.0f} s ({total / len(layers):.1f} s per layer); peak {peak_gib():.2f} GiB")

    if "maximise" not in args.skip:
        print(f"\nactivation maximisation, {args.steps} steps from the case")
        for k, info in enumerate(card.classes):
            if info.label == 0:
                continue
            try:
                done = maximise_case(case, card, class_name=info.name, network=network, device="cpu", steps=args.steps)
            except ValueError as err:
                print(f"{info.name}: {err}")
                continue
            print(f"{info.name}: {done.result.describe()}; window {done.window}; peak {peak_gib():.2f} GiB", flush=True)

    if "surrogate" not in args.skip:
        training = set(__import__("json").loads((card.training).read_text())["training_set"]["seeds"])
        assert not training & set(HELD_OUT_SEEDS), "held-out seeds must not be training seeds"
        cases = [generate_case(seed).case for seed in HELD_OUT_SEEDS]
        print(f"\nsurrogates fitted on generated seed {HELD_OUT_SEEDS[0]}, measured on seeds {HELD_OUT_SEEDS[1:]}")
        others = []
        for other in cases[1:]:
            image, _, labels = network_view(other, card, network, "cpu")
            features, _ = voxel_features(image, card.modalities)
            others.append((other.name, features, labels.cpu().numpy().reshape(-1)))
        foreground = [k for k, c in enumerate(card.classes) if c.label != 0]
        for kind in ("tree", "linear"):
            fitted = case_surrogate(cases[0], card, kind=kind, network=network, device="cpu").surrogate
            print(f"{kind}: fit {fitted.seconds:.1f} s; on its own case's held-out voxels: {fitted.describe()}")
            for name, features, labels in others:
                inside = labels >= 0
                predicted = fitted.predict(features).reshape(-1)[inside]
                f = measure_fidelity(predicted, labels[inside], card.class_names, foreground)
                dice = ", ".join(f"{c} {v:.3f}" for c, v in f.dice.items())
                print(f"  held-out case {name}: agreement {f.agreement:.4f}, Dice {dice}, low fidelity {f.low}")
        fitted = case_surrogate(case, card, network=network, device="cpu").surrogate
        print(f"tree on {case.name}: fit {fitted.seconds:.1f} s; {fitted.describe()}")
    print(f"\npeak RSS {peak_gib():.2f} GiB; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
