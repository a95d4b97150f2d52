"""The uncertainty layer: its cost as a multiple of one segmentation, and whether its entropy finds the errors.

Run: ``nice -n 5 .venv/bin/python benchmarks/uncertainty.py`` (``--help`` for options). With the bundled
demo model (``sample_data/models/demo3d/card.yaml``, or ``--model CARD``) on ``--count`` held-out generated
cases (seeds from ``--seed-start``, 900000 by default: never used in training; ``evaluate_generated``'s
rule), for each ensemble of ``core.model.uncertainty`` (``--modes``, default checkpoints, flips, dropout):

* cost: seconds of ``uncertainty()`` over the seconds of one ``segment()`` of the same case with the same
  network run just before it (after one warm-up segmentation), median over the cases;
* AUROC of the entropy (and of the mutual information) for the model's errors: voxels whose label
  differs from the generated case's true label against voxels where it agrees, within the brain
  (the generator's non-zero voxels); pooled over all cases, and the median of the per-case AUROCs.
  The issue's goal: AUROC of the entropy >= 0.8. A second AUROC is taken within the tumour's
  neighbourhood only (true or predicted tumour, dilated by 3 voxels), where errors are not told
  apart from the trivially right background.

A mode the model cannot make (MC dropout on a network without dropout) prints its refusal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import machine  # noqa: E402

from napari_segxai.core.io.paths import demo_model_card_path  # noqa: E402
from napari_segxai.core.model.card import build_network  # noqa: E402
from napari_segxai.core.model.device import pick_device  # noqa: E402
from napari_segxai.core.model.inference import segment  # noqa: E402
from napari_segxai.core.model.loading import load_model_card  # noqa: E402
from napari_segxai.core.model.uncertainty import MODES, uncertainty  # noqa: E402
from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START  # noqa: E402
from napari_segxai.core.training.synth import generate_case  # noqa: E402


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positives`` (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    scores, positives = np.asarray(scores, np.float64).ravel(), np.asarray(positives, bool).ravel()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(demo_model_card_path()), help="model card (default: the demo3d card)")
    parser.add_argument("--count", type=int, default=5, help="held-out generated cases (default 5)")
    parser.add_argument("--seed-start", type=int, default=HELD_OUT_SEED_START, help="first seed (default 900000)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated ensembles (default all)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: CUDA, then MPS, then CPU)")
    args = parser.parse_args(argv)
    from scipy import ndimage

    card = load_model_card(args.model)
    device = pick_device(args.device)
    network = build_network(card, device)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    seeds = list(range(args.seed_start, args.seed_start + args.count))
    print(f"Machine: {machine()}")
    print(f"Model: {card.name} ({card.path}); device {device}; held-out seeds {seeds[0]}-{seeds[-1]}")
    cases = [generate_case(seed).case for seed in seeds]
    segment(cases[0], card, network=network, device=device)  # warm-up
    plain = []
    for case in cases:
        result = segment(case, card, network=network, device=device)
        brain = np.any(case.channels != 0, axis=0)
        tumour = ndimage.binary_dilation((case.label > 0) | (result.labels > 0), iterations=3) & brain
        plain.append((result.seconds, result.labels != case.label, brain, tumour))
    print(f"One segmentation: median {statistics.median(p[0] for p in plain):.2f} s; voxels in error within the "
          f"brain: {sum(int(p[1][p[2]].sum()) for p in plain)} of {sum(int(p[2].sum()) for p in plain)}")
    print(f"{'mode':12s} {'runs':>4s} {'seconds':>8s} {'x seg':>6s} {'AUROC H':>8s} {'median':>7s} {'AUROC MI':>9s} "
          f"{'H tumour':>9s}  goal H >= 0.8")
    for mode in modes:
        measured, ratios = [], []
        try:
            for case in cases:  # each ensemble right after a segmentation of the same case: the load alike
                seconds = segment(case, card, network=network, device=device).seconds
                measured.append(uncertainty(case, card, mode, device=device))
                ratios.append(measured[-1].seconds / seconds)
        except ValueError as err:
            print(f"{mode:12s} refused: {err}")
            continue
        pooled = lambda attr, where: auroc(  # noqa: E731
            np.concatenate([getattr(m, attr)[p[where]] for m, p in zip(measured, plain)]),
            np.concatenate([p[1][p[where]] for p in plain]))
        per_case = [auroc(m.entropy[p[2]], p[1][p[2]]) for m, p in zip(measured, plain)]
        entropy_auroc = pooled("entropy", 2)
        print(f"{mode:12s} {len(measured[0].members):4d} {statistics.median(m.seconds for m in measured):8.2f} "
              f"{statistics.median(ratios):6.2f} {entropy_auroc:8.3f} {statistics.median(per_case):7.3f} "
              f"{pooled('mutual_information', 2):9.3f} {pooled('entropy', 3):9.3f}  "
              f"{'met' if entropy_auroc >= 0.8 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"Total {time.perf_counter() - t0:.0f} s")
    sys.exit(code)
