"""Which sequence carries each class: modality agreement, seconds and forward passes per case, per method.

Run: ``nice -n 5 .venv/bin/python benchmarks/modality.py`` (``--help`` for options). On held-out generated
cases (seeds never used to train the model; ``--seed-start``, ``--count``) with the bundled demo
model: each case is segmented and cropped as ``segxai evaluate --methods`` does
(``core.trust.case_problem``, every predicted tumour class), then each method explains the crop
and ``core.trust.ground_truth_benchmark`` compares the share of relevance per modality with the
modality that carries the class (the ``modality_agrees`` column of ``segxai evaluate``), under both
definitions of the carrier (core/trust/groundtruth.py): the class's contrast against its
surroundings (the default) and the generator's record of its contrast against healthy brain.
Prints, per definition and method: the share of class/case pairs whose top modality is the
carrier (all classes and per class), the mean share on the carrier, seconds of the explanation
per case (the segmentation, the same for every method, printed apart) and samples through the
network per case (forward passes; the gradient methods add one backward pass per class).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import machine  # noqa: E402

from napari_segxai.core.attribution import get_method  # noqa: E402
from napari_segxai.core.model.card import default_model_card  # noqa: E402
from napari_segxai.core.model.loading import load_model_card  # noqa: E402
from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START  # noqa: E402
from napari_segxai.core.training.synth import generate_case  # noqa: E402
from napari_segxai.core.trust import case_problem, ground_truth_benchmark  # noqa: E402

METHODS = "modality_shapley,gradient_x_input,saliency,integrated_gradients:steps=8"
# Seeds 901000-901099 are where the baseline of modality_shapley was chosen; the default report runs on 901100-.
TUNING_SEED_START = HELD_OUT_SEED_START + 1000
EVALUATION_SEED_START = HELD_OUT_SEED_START + 1100


def parse_methods(spec: str) -> list[tuple[str, object]]:
    """(label, method) per comma-separated item ``NAME[:KEY=VALUE...]``."""
    out = []
    for item in spec.split(","):
        name, *params = item.strip().split(":")
        kwargs = {}
        for p in params:
            key, value = p.split("=")
            kwargs[key] = type(get_method(name).parameters[key].default)(value)
        label = name + (f"({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")
        out.append((label, get_method(name, **kwargs)))
    return out


def training_seeds(card) -> set[int]:
    """Seeds the card's model was trained on (empty when the card has no training record)."""
    if card.training is None or not Path(card.training).is_file():
        return set()
    return set(json.loads(Path(card.training).read_text())["training_set"]["seeds"])


class Counter:
    """Samples through a network (a forward pre-hook), and the clock, read at each progress report."""

    def __init__(self, network: torch.nn.Module):
        self.samples = 0
        self.marks: list[tuple[float, int]] = []
        self.handle = network.register_forward_pre_hook(self._count)

    def _count(self, _module, args) -> None:
        self.samples += int(args[0].shape[0])

    def mark(self, done: int, total: int) -> None:
        self.marks.append((time.perf_counter(), self.samples))


def measure(card, methods, seeds, args) -> list[dict]:
    """One row per case, method and class: carrier, top modality, agrees, share on the carrier, seconds, passes."""
    rows = []
    for i, seed in enumerate(seeds):
        t = time.perf_counter()
        synth = generate_case(seed)
        generated = time.perf_counter() - t
        t = time.perf_counter()
        problem = case_problem(synth.case, card, margin=args.margin, device=args.device)
        segmented = time.perf_counter() - t
        counter = Counter(problem.network)
        try:
            for label, method in methods:
                counter.marks = []
                truth = ground_truth_benchmark(problem, [method], signature=synth.modality_signature,
                                               random_weights=False, edge_filters=(), progress=counter.mark)
                (start, before), (stop, after) = counter.marks[0], counter.marks[-1]
                for r in truth.modality:
                    shares = {k: float(v) for k, v in (item.split("=") for item in r.shares.split(";"))}
                    healthy = synth.modality_signature[r.class_name]
                    healthy_carrier = max(healthy, key=lambda m: abs(healthy[m]))
                    rows.append({"seed": seed, "case": synth.case.name, "method": label, "class": r.class_name,
                                 "carrier": r.carrier, "top": r.top_modality, "agrees": int(r.agrees),
                                 "carrier_share": round(r.carrier_share, 4),
                                 "healthy_carrier": healthy_carrier,
                                 "healthy_agrees": int(r.top_modality == healthy_carrier and sum(shares.values()) > 0),
                                 "healthy_carrier_share": round(shares[healthy_carrier], 4), "shares": r.shares,
                                 "seconds": round(stop - start, 3), "forward_passes": after - before,
                                 "segment_seconds": round(segmented, 2), "crop": "x".join(map(str, problem.spatial_shape))})
        finally:
            counter.handle.remove()
        print(f"  case {i + 1}/{len(seeds)} seed {seed}: classes {', '.join(problem.class_names)}, crop "
              f"{problem.spatial_shape}, generated in {generated:.1f} s, segmented in {segmented:.1f} s", flush=True)
    return rows


def report(rows: list[dict], methods, classes: list[str], prefix: str = "") -> None:
    """The Markdown table: per method, agreement over all pairs and per class, share on the carrier, cost."""
    rows = [{**r, "agrees": r[f"{prefix}agrees"], "carrier_share": r[f"{prefix}carrier_share"]} for r in rows]
    header = ["method", "agrees (all pairs)", *[f"{c}" for c in classes], "share on carrier",
              "seconds / case", "forward passes / case"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, _ in methods:
        mine = [r for r in rows if r["method"] == label]
        agreed = sum(r["agrees"] for r in mine)
        per_class = []
        for c in classes:
            of_class = [r for r in mine if r["class"] == c]
            per_class.append(f"{sum(r['agrees'] for r in of_class)}/{len(of_class)}" if of_class else "-")
        cases = {r["seed"]: r for r in mine}
        seconds = [r["seconds"] for r in cases.values()]
        passes = [r["forward_passes"] for r in cases.values()]
        spread = statistics.stdev(seconds) if len(seconds) > 1 else 0.0
        print(f"| {label} | {agreed / max(len(mine), 1):.0%} ({agreed}/{len(mine)}) | " + " | ".join(per_class)
              + f" | {statistics.mean(r['carrier_share'] for r in mine):.2f} | {statistics.mean(seconds):.2f} ± "
              f"{spread:.2f} | {statistics.mean(passes):.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model card; default: the bundled demo model")
    parser.add_argument("--methods", default=METHODS, help=f"comma-separated METHOD[:KEY=VALUE...]; default {METHODS}")
    parser.add_argument("--seed-start", type=int, default=EVALUATION_SEED_START,
                        help=f"first generated seed (default {EVALUATION_SEED_START}; the baseline was chosen on "
                             f"{TUNING_SEED_START}-{EVALUATION_SEED_START - 1})")
    parser.add_argument("--count", type=int, default=10, help="number of generated cases (default 10)")
    parser.add_argument("--margin", type=int, default=16,
                        help="crop margin (model grid voxels; default 16, as the published `segxai evaluate --methods` run)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per case, method and class here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    methods = parse_methods(args.methods)
    card = default_model_card() if args.model is None else load_model_card(args.model)
    seeds = list(range(args.seed_start, args.seed_start + args.count))
    trained = sorted(training_seeds(card).intersection(seeds))
    if trained:
        parser.error(f"seeds {trained[:5]} were used to train {card.name}; choose held-out seeds")
    print(f"Machine: {machine()}")
    print(f"Model {card.name} ({card.path}); {len(seeds)} generated cases, seeds {seeds[0]}-{seeds[-1]}; "
          f"device {args.device}; methods: {', '.join(label for label, _ in methods)}", flush=True)
    start = time.perf_counter()
    rows = measure(card, methods, seeds, args)
    classes = [c for c in card.class_names if any(r["class"] == c for r in rows)]
    cases = {r["seed"]: r for r in rows}.values()
    print(f"\nModality agreement over {len(cases)} held-out generated cases (seeds {seeds[0]}-{seeds[-1]}; class/case "
          f"pairs whose top modality is the carrier); segmenting and cropping each case took "
          f"{statistics.mean(r['segment_seconds'] for r in cases):.1f} s on average, not counted below; "
          f"wall {time.perf_counter() - start:.0f} s\n")
    print("Carrier: the modality in which the class differs most from its surroundings (the default):\n")
    report(rows, methods, classes)
    print("\nCarrier: the generator's record, the modality in which the class differs most from healthy brain:\n")
    report(rows, methods, classes, prefix="healthy_")
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nrows: {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
