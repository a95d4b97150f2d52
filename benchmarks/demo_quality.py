"""Demo model quality: Dice of the bundled models on held-out generated cases and on the real TCGA cases.

Run: ``nice -n 5 .venv/bin/python benchmarks/demo_quality.py`` (``--help`` for options). For each
model (default: the bundled ``demo3d`` and ``demo2d`` cards), with the code of ``segxai evaluate``
(``core.training.evaluate.evaluate_generated`` / ``evaluate_case``: ``segment()`` as the card says, then
``core.training.evaluate.region_dice`` raw and after ``largest_component``, summarised by
``core.training.evaluate.summarize``):

* ``--count`` held-out generated cases (seeds ``--seed-start``, 900000 by default, onwards; never
  used in training): Dice per region (whole tumour = labels 1, 2, 4; tumour core = 1, 4;
  enhancing = 4), mean ± SD and minimum, raw and "LCC" (only the largest connected tumour
  component kept);
* the mean over the first five of those seeds and the Dice of the held-out seed
  ``HELD_OUT_SEED_START + 777``: the cases ``tests/test_demo_model.py`` segments, so its floors can
  be set from what this prints;
* the real cases of ``--real`` (default: TCGA-DU-7294 and TCGA-FG-6692 of ``../shared/realdata``
  when present), against their ``fusion_mav`` reference label, raw and LCC, and the ``--extra``
  labelled case folders (``benchmarks/realdata.py --brainlesion`` prepares a third case) against
  their own label;
* the training record of each card (parameters, updates, minutes, training cases) from its
  manifest, and the seconds per case.

``--overlap`` and ``--roi-size`` replace the cards' sliding-window overlap and window size (same
weights; the leave-one-out models' too) to measure other inference settings; ``--overlaps 0.25,0.5,0.75`` repeats everything at each.
``--mirror-axes none 0`` repeats everything without mirroring and mirrored along axis 0 (the cards'
``inference.mirror_axes``, test-time augmentation: the logits of the mirror images averaged).
``--leave-one-out DIR`` scores each labelled real case (``benchmarks/realdata.py``; the shared ones and
the ``--extra`` ones) with a model
that did not train on it: ``DIR/without-CASE``, trained there first with ``--recipe`` (default
``configs/demo3d.yaml``, the bundled model's recipe) on the other real cases and the generated ones
when absent. The bundled model trained on both shared real cases, so their rows are not held out (the
``--extra`` case's are); the leave-one-out rows are. Writes one CSV row per case, model and region
(``--csv``, default ``demo_quality.csv`` in a new temporary folder): case, model, region, dice,
dice_lcc, seconds, with the set, seed, windows and overlap beside them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import realdata  # noqa: E402
from segment import machine  # noqa: E402

from napari_segxai.cli.evaluate import _reference  # noqa: E402
from napari_segxai.core.io.nifti import load_case  # noqa: E402
from napari_segxai.core.model.card import build_network  # noqa: E402
from napari_segxai.core.model.loading import load_model_card  # noqa: E402
from napari_segxai.core.io.paths import demo_model_card_path  # noqa: E402
from napari_segxai.core.model.inference import count_windows  # noqa: E402
from napari_segxai.core.model.preprocess import network_grid  # noqa: E402
from napari_segxai.core.training.synth import generate_case  # noqa: E402
from napari_segxai.core.training.evaluate import (
    FALSE_POSITIVE, FALSE_POSITIVE_CEREBELLUM, HELD_OUT_SEED_START, REGIONS, evaluate_case, evaluate_generated, summarize,
)
from napari_segxai.core.io.manifest import read_manifest

TEST_SEED = HELD_OUT_SEED_START + 777
"""The held-out seed tests/test_demo_model.py segments (outside the 20 benchmark seeds)."""
SUBSET = 5
"""The tests' QUALITY_SEEDS are the first five benchmark seeds."""


def card_for(name: str):
    """A bundled demo card by kind (demo3d, demo2d) or any card by path."""
    path = demo_model_card_path(name) if name in ("demo3d", "demo2d") else Path(name)
    return name if name in ("demo3d", "demo2d") else path.parent.name, load_model_card(path)


def windows_text(card) -> str:
    mirrored = f", mirrored along {','.join(map(str, card.mirror_axes))}" if card.mirror_axes else ""
    return f"{' x '.join(map(str, card.roi_size))}, overlap {card.overlap:g}{mirrored}"


def mirror_choices(values: list[str] | None) -> list[tuple[int, ...] | None]:
    """``--mirror-axes`` items (``none`` or comma-separated axes) as axis tuples; [None] (the cards' own) without it."""
    if not values:
        return [None]
    return [() if v.strip().lower() == "none" else tuple(int(a) for a in v.split(",")) for v in values]


def training_text(card) -> str:
    """Parameters, updates, wall minutes and training cases, from the card's training manifest."""
    if card.training is None or not Path(card.training).is_file():
        return "no training record"
    m = read_manifest(card.training)
    training_set = m["training_set"]
    if training_set.get("kind") == "files":
        seeds = [c["seed"] for c in training_set["cases"] if "seed" in c]
        files = [c["name"] for c in training_set["cases"] if "seed" not in c]
    else:
        seeds, files = training_set["seeds"], []
    crop = m.get("crop", {})
    crop_text = f", {crop.get('per_step')} crops of {' x '.join(map(str, crop.get('size', [])))} per update" if crop else ""
    checkpoints = ", ".join(f"{c['step']}: {c['lr']:.1e}" for c in m["checkpoints"])
    folder = Path(card.path).parent
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "influence" not in p.parts)
    return (f"{m.get('parameters', '?'):,} parameters; {m['steps']} updates in {m['seconds'] / 60:.1f} min wall "
            f"({m.get('generation_seconds', 0):.0f} s of it preparing cases); {len(seeds)} generated training cases "
            f"(seeds {min(seeds)}-{max(seeds)})" + (f" and {len(files)} real ({', '.join(files)})" if files else "")
            + f"{crop_text}; stopped: {m.get('stopped', '?')}; "
            f"loss (mean of the last 20 updates) {m['checkpoints'][-1]['loss']:.3f}; "
            f"checkpoints (step: lr) {checkpoints}; card folder without the TracIn index {size / 1e6:.1f} MB")


def case_windows(case, card) -> int:
    """Sliding windows ``segment()`` takes over one case (3D), or per slice (2D)."""
    shape = network_grid(case, card).shape
    if card.spatial_dims == 2:
        shape = tuple(s for i, s in enumerate(shape) if i != card.slice_axis)
    return count_windows(shape, card.roi_size, card.overlap)


def long_rows(rows: list[dict], model: str, card, which: str, windows: int) -> list[dict]:
    """One CSV row per case and region from ``evaluate_generated`` / ``evaluate_case`` rows."""
    out = []
    for r in rows:
        for region in REGIONS:
            out.append({"case": r["case"], "model": model, "region": region, "dice": r[region],
                        "dice_lcc": r[f"{region}_lcc"], FALSE_POSITIVE: r[FALSE_POSITIVE], "seconds": r["seconds"], "set": which,
                        "seed": r.get("seed", ""), "roi_size": "x".join(map(str, card.roi_size)),
                        "overlap": card.overlap, "mirror_axes": ",".join(map(str, card.mirror_axes)) or "none",
                        "windows": windows})
    return out


def print_summary(label: str, summary: dict) -> None:
    print(f"  {label}")
    print(f"    {'region':13s} {'Dice mean ± SD':>16s} {'min':>6s}   {'LCC mean ± SD':>16s} {'min':>6s}")
    for region in REGIONS:
        raw, lcc = summary[region], summary[f"{region}_lcc"]
        print(f"    {region:13s} {raw['mean']:7.3f} ± {raw['sd']:.3f}  {raw['min']:6.3f}   "
              f"{lcc['mean']:7.3f} ± {lcc['sd']:.3f}  {lcc['min']:6.3f}")
    fp = summary[FALSE_POSITIVE]
    print(f"    predicted tumour in components touching no true tumour voxel: mean share {fp['mean']:.3f} ± {fp['sd']:.3f}")
    if FALSE_POSITIVE_CEREBELLUM in summary:
        print(f"      of it in the cerebellum: mean share {summary[FALSE_POSITIVE_CEREBELLUM]['mean']:.3f} "
              f"± {summary[FALSE_POSITIVE_CEREBELLUM]['sd']:.3f}")


def reference_text(folder: Path, stem: str) -> str:
    """What a real case is scored against: the ``stem`` file when the folder has one, else its own label (as ``_reference``)."""
    return stem if any((folder / f"{stem}{suffix}").is_file() for suffix in (".nii.gz", ".nii")) else "its own label"


def regions_text(row: dict, digits: int = 3) -> str:
    return (", ".join(f"{region} {row[region]:.{digits}f} (LCC {row[f'{region}_lcc']:.{digits}f})" for region in REGIONS)
            + f"; false-positive share {row[FALSE_POSITIVE]:.{digits}f}")


def fold_card(folder: Path, cases: list[Path], left_out: str, recipe: Path):
    """The card of the model trained without ``left_out`` (``folder``/without-CASE), trained there with ``recipe``
    on the other ``cases`` first if absent."""
    out = folder / f"without-{left_out}"
    if not (out / "card.yaml").is_file():
        from napari_segxai.cli._common import TerminalProgress
        from napari_segxai.core.training.config import load_config, make_config
        from napari_segxai.core.training.loop import train

        data = realdata.build(Path(tempfile.mkdtemp(prefix="segxai-fold-")) / "data",
                              [c for c in cases if c.name != left_out])
        config = load_config(recipe)
        config["data"]["dataset"] = str(data)
        print(f"  training the model without {left_out} into {out} ({recipe}; this takes the recipe's time)")
        with TerminalProgress(f"train without {left_out}") as bar:
            train(make_config(config, source=str(recipe)), out, progress=bar)
    return load_model_card(out / "card.yaml")


def leave_one_out(folder: Path, cases: list[Path], recipe: Path, overlaps: list[float], reference: str, device: str,
                  csv_rows: list, roi_size: tuple[int, ...] | None = None,
                  mirrors: list[tuple[int, ...] | None] = (None,)) -> None:
    """Each labelled real case of ``cases`` segmented by the model that trained on the others and not on it, at each
    overlap and mirroring (and ``roi_size``)."""
    print(f"\n[leave-one-out] recipe {recipe}, models in {folder}, cases {', '.join(c.name for c in cases)}")
    table = []
    for path in cases:
        name = path.name
        card = fold_card(folder, cases, name, recipe)
        print(f"  without {name}: {training_text(card)}; windows {roi_size or card.roi_size}")
        network = build_network(card, device)
        case = load_case(path)
        for overlap, axes in [(o, m) for o in overlaps for m in mirrors]:
            fold = dataclasses.replace(card, overlap=overlap, roi_size=roi_size or card.roi_size,
                                       mirror_axes=card.mirror_axes if axes is None else axes)
            row = evaluate_case(case, _reference(path, reference), fold, network=network, device=device)
            csv_rows += long_rows([row], f"without {name}", fold, "leave-one-out", case_windows(case, fold))
            mirrored = ",".join(map(str, fold.mirror_axes)) or "none"
            table.append((name, overlap, mirrored, row))
            print(f"  {name} by the model without it, overlap {overlap:g}, mirrored along {mirrored} "
                  f"({row['seconds']:.1f} s): " + regions_text(row))
    if table:
        print("\n| case | overlap | mirrored along | whole tumour (LCC) | tumour core (LCC) | enhancing (LCC) |\n"
              "|---|---|---|---|---|---|")
        for name, overlap, mirrored, row in table:
            print(f"| {name} | {overlap:g} | {mirrored} | "
                  + " | ".join(f"{row[r]:.3f} ({row[f'{r}_lcc']:.3f})" for r in REGIONS) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo3d,demo2d",
                        help="comma-separated: demo3d, demo2d (the bundled cards) or card paths (default both demos)")
    parser.add_argument("--count", type=int, default=20, help="held-out generated cases (default 20)")
    parser.add_argument("--seed-start", type=int, default=HELD_OUT_SEED_START,
                        help=f"first held-out seed (default {HELD_OUT_SEED_START})")
    parser.add_argument("--no-test-seed", action="store_true",
                        help=f"skip the tests' held-out seed {TEST_SEED}")
    parser.add_argument("--real", type=Path, nargs="*", default=None, metavar="DIR",
                        help="real case folders with a reference label (default: "
                             f"{', '.join(realdata.LABELLED)} in {realdata.REALDATA} when present; give none for none)")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], metavar="DIR",
                        help="more labelled real case folders (benchmarks/realdata.py --brainlesion writes one), "
                             "scored with --real and in --leave-one-out; their label is the folder's own")
    parser.add_argument("--reference", default="fusion_mav", help="reference label stem in each --real folder")
    parser.add_argument("--overlap", type=float, default=None, help="replace the cards' sliding-window overlap")
    parser.add_argument("--roi-size", default=None,
                        help="replace the cards' window size, comma-separated (e.g. 104,120,96); "
                             "the leave-one-out models' too")
    parser.add_argument("--csv", type=Path, default=None, help="per-case CSV (default: a new temporary folder)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps")
    parser.add_argument("--overlaps", default=None, metavar="A,B,...",
                        help="evaluate each model at each of these overlaps (e.g. 0.25,0.5,0.75) instead of one")
    parser.add_argument("--mirror-axes", nargs="*", default=None, metavar="AXES",
                        help="replace the cards' inference.mirror_axes: each item 'none' or axes such as 0 or 0,1; "
                             "several items repeat everything with each (e.g. --mirror-axes none 0)")
    parser.add_argument("--leave-one-out", type=Path, default=None, metavar="DIR",
                        help="also score each labelled real case with a model trained without it (DIR/without-CASE, "
                             "trained there with --recipe first when absent: the recipe's training time per case)")
    parser.add_argument("--recipe", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "demo3d.yaml",
                        help="training config of the leave-one-out models (default configs/demo3d.yaml)")
    parser.add_argument("--training-only", action="store_true", help="print the cards' training records and stop")
    args = parser.parse_args(argv)
    if args.overlaps is not None and args.overlap is not None:
        parser.error("give --overlap or --overlaps, not both")
    overlaps = [float(v) for v in args.overlaps.split(",")] if args.overlaps else [args.overlap]
    if args.training_only:
        for name in args.models.split(","):
            label, card = card_for(name.strip())
            print(f"{label}: {training_text(card)}")
        return 0

    real = (realdata.shared_cases() if args.real is None else list(args.real)) + list(args.extra)
    seeds = list(range(args.seed_start, args.seed_start + args.count))
    out_csv = args.csv or Path(tempfile.mkdtemp(prefix="segxai-demo-quality-")) / "demo_quality.csv"
    print(f"Machine: {machine()}")
    print(f"Held-out generated cases: {len(seeds)} (seeds {seeds[0]}-{seeds[-1]})" if seeds else "No generated cases")
    print(f"Real cases: {', '.join(p.name for p in real) or 'none'} (reference {args.reference}"
          + (f"; the --extra cases' own label)" if args.extra else ")"))
    first = generate_case(seeds[0] if seeds else TEST_SEED).case
    csv_rows: list[dict] = []
    mirrors = mirror_choices(args.mirror_axes)
    for name, overlap, axes in [(m, o, a) for m in args.models.split(",") if m for o in overlaps for a in mirrors]:
        model, card = card_for(name)
        changed = {}
        if overlap is not None:
            changed["overlap"] = overlap
        if axes is not None:
            changed["mirror_axes"] = axes
        if args.roi_size is not None:
            changed["roi_size"] = tuple(int(s) for s in args.roi_size.split(","))
        label = model if not changed else f"{model} ({windows_text(dataclasses.replace(card, **changed))}, same weights)"
        card = dataclasses.replace(card, **changed)
        network = build_network(card, args.device)
        print(f"\n[{label}] {card.path}: windows {windows_text(card)}, sw_batch_size {card.sw_batch_size}; "
              f"{case_windows(first, card)} window(s) per generated case{' slice' if card.spatial_dims == 2 else ''}")
        print(f"  training: {training_text(card)}")
        start, load = time.perf_counter(), os.getloadavg()[0]
        rows = evaluate_generated(card, seeds, network=network, device=args.device) if seeds else []
        test_rows = ([] if args.no_test_seed or TEST_SEED in seeds else
                     evaluate_generated(card, [TEST_SEED], network=network, device=args.device))
        generated_seconds = time.perf_counter() - start
        windows = case_windows(first, card)
        csv_rows += long_rows(rows, label, card, "generated", windows)
        csv_rows += long_rows(test_rows, label, card, "test seed", windows)
        if rows:
            print_summary(f"held-out generated cases (n={len(rows)}, seeds {seeds[0]}-{seeds[-1]}):", summarize(rows))
            subset = rows[:SUBSET]
            if len(subset) == SUBSET:
                means = {region: statistics.fmean(r[region] for r in subset) for region in REGIONS}
                print(f"  first {SUBSET} seeds ({subset[0]['seed']}-{subset[-1]['seed']}), mean Dice (tests' "
                      f"MEASURED_DICE): " + ", ".join(f"{region} {v:.4f}" for region, v in means.items()))
            worst = {region: min(rows, key=lambda r: r[region]) for region in REGIONS}
            print("  per-case minimum: " + ", ".join(f"{region} {r[region]:.4f} (seed {r['seed']})"
                                                     for region, r in worst.items()))
            most = max(rows, key=lambda r: r[FALSE_POSITIVE])
            print(f"  largest false-positive share: {most[FALSE_POSITIVE]:.3f} (seed {most['seed']}; whole tumour "
                  f"{most['whole_tumour']:.3f})")
            times = [r["seconds"] for r in rows]
            print(f"  seconds per case (segment()): median {statistics.median(times):.1f}, "
                  f"min {min(times):.1f}, max {max(times):.1f}")
        for r in test_rows + [r for r in rows if r["seed"] == TEST_SEED]:
            print(f"  tests' held-out seed {r['seed']}: " + regions_text(r, 4))
        print(f"  generated cases: {generated_seconds:.0f} s wall in all (load average {load:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end)")
        for folder in real:
            case = load_case(folder)
            row = evaluate_case(case, _reference(folder, args.reference), card, network=network, device=args.device)
            csv_rows += long_rows([row], label, card, "real", case_windows(case, card))
            print(f"  real {folder.name} ({case_windows(case, card)} window(s){' per slice' if card.spatial_dims == 2 else ''}, "
                  f"{row['seconds']:.1f} s) vs {reference_text(folder, args.reference)}: " + regions_text(row))
        del network
    if args.leave_one_out is not None:
        cases = realdata.shared_cases() + [Path(p).absolute() for p in args.extra]
        leave_one_out(args.leave_one_out, cases, args.recipe, [o if o is not None else 0.5 for o in overlaps], args.reference,
                      args.device, csv_rows, tuple(int(v) for v in args.roi_size.split(",")) if args.roi_size else None,
                      mirrors)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(csv_rows[0]))
        writer.writeheader()
        writer.writerows(csv_rows)
    print(f"\nper-case rows: {out_csv} ({len(csv_rows)} rows)")
    print(f"finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
