"""Trust measures on the demo case with the demo model: the numbers per method and the seconds each measure costs.

Run: ``.venv/bin/python benchmarks/trust.py`` (``--help`` for options). Builds the predicted-region
problem of the demo case (``core.trust.case_problem``: the card's sliding-window segmentation, the
crop around the predicted regions), then for each method: cascading model parameter
randomisation, the quality metrics, the ground-truth benchmark and (``--data``) data
randomisation. Prints Markdown tables for ``RESULTS.md`` and writes the CSV tables and figures
into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import machine  # noqa: E402

from napari_segxai.core.attribution import get_method  # noqa: E402
from napari_segxai.core.model.card import default_model_card  # noqa: E402
from napari_segxai.core.model.loading import load_model_card  # noqa: E402
from napari_segxai.core.io.generated_cases import demo_case_path, load_synth_case  # noqa: E402
from napari_segxai.core.trust import (  # noqa: E402
    QualitySettings, case_problem, data_randomisation_test, ground_truth_benchmark, quality_metrics, randomisation_test,
)
from napari_segxai.core.training.synth import generate_case  # noqa: E402
from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START  # noqa: E402
from napari_segxai.core.trust.tables import summarise, write_csv  # noqa: E402


def markdown(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_by_method(rows, field: str) -> dict[str, float]:
    """Mean of a field over classes, per method."""
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r.method, []).append(getattr(r, field))
    return {k: float(np.nanmean(v)) for k, v in out.items()}


def ground_truth_over_cases(card, methods, args) -> None:
    """Precision and modality agreement over held-out generated cases: mean and spread per method, model and class."""
    start = time.perf_counter()
    precision, modality = [], []
    seeds = range(HELD_OUT_SEED_START + 500, HELD_OUT_SEED_START + 500 + args.gt_cases)   # held out, past evaluate's
    for seed in seeds:
        synth = generate_case(seed)
        problem = case_problem(synth.case, card, margin=args.margin, device=args.device)
        truth = ground_truth_benchmark(problem, methods, signature=synth.modality_signature)
        precision += truth.precision
        modality += truth.modality
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(precision, args.out / "groundtruth_cases_precision.csv")
    write_csv(modality, args.out / "groundtruth_cases_modality.csv")
    seeds = f"seeds {seeds[0]}-{seeds[-1]}"
    print(f"\n### Explanation precision over {args.gt_cases} held-out generated cases ({seeds}; mean ± sd, "
          f"{time.perf_counter() - start:.0f} s)\n")
    table = summarise(precision, ("method", "model", "class_name"), ("precision",))
    print(markdown(["method", "model", "class", "precision", "n"],
                   [[*r.group.split(" / "), f"{r.mean:.2f} ± {r.sd:.2f}", r.n] for r in table]))
    agreement = summarise(modality, ("method", "model", "class_name"), ("agrees", "carrier_share"))
    print("\n### Modality ground truth over the same cases (share of cases whose top modality is the carrier)\n")
    rows = {}
    for r in agreement:
        rows.setdefault(r.group, {})[r.measure] = r
    print(markdown(["method", "model", "class", "agrees (share of cases)", "share on carrier", "n"],
                   [[*g.split(" / "), f"{v['agrees'].mean:.2f}", f"{v['carrier_share'].mean:.2f} ± {v['carrier_share'].sd:.2f}",
                     v["agrees"].n] for g, v in rows.items()]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model card; default: the bundled demo model")
    parser.add_argument("--methods", default="saliency,gradient_x_input,integrated_gradients:steps=8,grad_cam",
                        help="comma-separated methods, each optionally METHOD:KEY=VALUE:KEY=VALUE")
    parser.add_argument("--max-steps", type=int, default=4, help="cascading randomisation depths")
    parser.add_argument("--noise-samples", type=int, default=2, help="max-sensitivity noisy inputs")
    parser.add_argument("--subsets", type=int, default=32, help="faithfulness subsets")
    parser.add_argument("--deletion-steps", type=int, default=20, help="deletion curve steps")
    parser.add_argument("--margin", type=int, default=16, help="crop margin (voxels of the model grid)")
    parser.add_argument("--data", action="store_true", help="also run data randomisation")
    parser.add_argument("--data-steps", type=int, default=100, help="training steps of each twin")
    parser.add_argument("--gt-cases", type=int, default=0,
                        help="ground truth over this many held-out generated cases (seeds 900500..): mean and spread")
    parser.add_argument("--only-gt-cases", action="store_true", help="run only the multi-case ground truth")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps; default: CUDA, then MPS, then CPU")
    parser.add_argument("--out", type=Path, default=Path("/tmp/segxai-trust-benchmark"), help="folder for CSVs and figures")
    args = parser.parse_args()

    torch.set_num_threads(2)
    methods = []
    for item in args.methods.split(","):
        name, *params = item.split(":")
        kwargs = {}
        for p in params:
            key, value = p.split("=")
            kwargs[key] = type(get_method(name).parameters[key].default)(value)
        methods.append(get_method(name, **kwargs))
    card = default_model_card() if args.model is None else load_model_card(args.model)
    print(f"Machine: {machine()}")
    if args.gt_cases:
        ground_truth_over_cases(card, methods, args)
        if args.only_gt_cases:
            return 0
    synth = load_synth_case(demo_case_path())
    start = time.perf_counter()
    problem = case_problem(synth.case, card, margin=args.margin, device=args.device)
    print(f"Case {synth.case.name}, model {card.name}; crop {problem.spatial_shape} "
          f"({time.perf_counter() - start:.1f} s to segment and crop); classes {', '.join(problem.class_names)}; "
          f"target voxels {problem.target.voxel_counts}; device {problem.inputs.device}")
    labels = [m.name + ("" if not m.params else "(" + ", ".join(f"{k}={v}" for k, v in m.params.items()
                                                                  if k in ("steps", "n_samples")) + ")") for m in methods]
    print("Methods: " + "; ".join(labels))

    sanity_seconds = {}
    sanity_rows, verdicts = [], []
    for method in methods:
        t = time.perf_counter()
        result = randomisation_test(problem, [method], modes=("cascading",), max_steps=args.max_steps)
        sanity_seconds[method.name] = time.perf_counter() - t
        sanity_rows += result.rows
        verdicts += result.verdicts()
    layers = len(result.layers)
    quality = quality_metrics(problem, methods, settings=QualitySettings(
        n_subsets=args.subsets, deletion_steps=args.deletion_steps, noise_samples=args.noise_samples))
    truth_seconds = {}
    precision, modality = [], []
    for method in methods:
        t = time.perf_counter()
        truth = ground_truth_benchmark(problem, [method], signature=synth.modality_signature,
                                       edge_filters=() if precision else ("sobel", "laplace"))
        truth_seconds[method.name] = time.perf_counter() - t
        precision += truth.precision
        modality += truth.modality
    data = None
    if args.data:
        data = data_randomisation_test(problem, methods, card, steps=args.data_steps)

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(sanity_rows, args.out / "sanity.csv")
    write_csv(verdicts, args.out / "sanity_verdicts.csv")
    quality.to_csv(args.out / "metrics.csv")
    quality.plot_deletion(args.out / "deletion.png")
    write_csv(precision, args.out / "groundtruth_precision.csv")
    write_csv(modality, args.out / "groundtruth_modality.csv")
    if data is not None:
        data.to_csv(args.out / "data_randomisation.csv")

    names = [m.name for m in methods]
    print("\n### Seconds per measure and method (one explanation of all classes; each measure)\n")
    per = {r.method: r for r in quality.rows}
    print(markdown(
        ["method", "explain", f"randomisation ({args.max_steps} depths)", f"faithfulness ({args.subsets} subsets)",
         f"deletion ({args.deletion_steps} steps)", f"max-sensitivity ({args.noise_samples} samples)",
         "complexity", "ground truth (trained + random weights)"],
        [[n, per[n].seconds_explain, sanity_seconds[n], per[n].seconds_faithfulness, per[n].seconds_deletion,
          per[n].seconds_sensitivity, per[n].seconds_complexity, truth_seconds[n]] for n in names]))
    print(f"\n### Model parameter randomisation (cascading, {layers} layers): similarity once all are randomised\n")
    print(markdown(["method", "class", "Spearman |e|", "SSIM", "top-k", "passes (Spearman < 0.5)"],
                   [[v.method, v.class_name, v.spearman, v.ssim, v.top_k, v.passes] for v in verdicts]))
    print("\n### Quality metrics (mean over classes)\n")
    cols = ["faithfulness", "deletion_auc", "deletion_auc_random", "max_sensitivity", "above_threshold",
            "entropy_normalised"]
    means = {c: mean_by_method(quality.rows, c) for c in cols}
    print(markdown(["method", "faithfulness r", "deletion AUC", "deletion AUC (random order)", "max-sensitivity",
                    "share > 10% of max", "entropy / log N"], [[n] + [means[c][n] for c in cols] for n in names]))
    print("\n### Explanation precision (k = lesion size)\n")
    print(markdown(["method", "model", "class", "lesion voxels", "precision", "tumour precision"],
                   [[r.method, r.model, r.class_name, r.lesion_voxels, r.precision, r.tumour_precision] for r in precision]))
    print("\n### Modality ground truth\n")
    print(markdown(["method", "model", "class", "carrier", "share on carrier", "carrier's share of |contrast|",
                    "top modality", "agrees"],
                   [[r.method, r.model, r.class_name, r.carrier, r.carrier_share, r.expected_share, r.top_modality,
                     r.agrees] for r in modality]))
    if data is not None:
        print(f"\n### Data randomisation ({args.data_steps} steps per twin, final losses {data.final_loss}; "
              f"{data.seconds:.0f} s)\n")
        print(markdown(["method", "class", "first", "second", "Spearman |e|", "SSIM", "top-k"],
                       [[r.method, r.class_name, r.first, r.second, r.spearman, r.ssim, r.top_k] for r in data.rows]))
    print(f"\nTotal {time.perf_counter() - start:.0f} s; CSVs and figures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
