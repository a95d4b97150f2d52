"""TracIn speed and ranking quality on the bundled demo model (160 training cases, 6 checkpoints).

Run: ``.venv/bin/python benchmarks/influence.py`` (``--help`` for options; ``--stages`` runs a
part). Stages, each saved as JSON in ``--work`` so a later run can reuse it:

* ``index``: build the default index once (last 3 layers, exact gradients, threshold 0.5) for
  the whole training set: seconds, file size (an existing current index is reused and its
  recorded build time reported, unless ``--rebuild``);
* ``query``: one query for all classes of the full-size demo case (``segxai demo``'s case):
  median seconds of ``--repeats`` runs, end to end (segmentation of the case included) and the
  TracIn part alone (test gradients + product), peak resident memory;
* ``captum``: captum ``TracInCP`` (``sample_wise_grads_per_batch=False``) with the same
  checkpoints, learning rates, layers, loss and prepared training regions, for the same query,
  on the first ``--captum-cases`` training cases, extrapolated linearly to the whole set (and its
  scores checked against ours on those cases);
* ``spearman``: on ``--subset`` training cases, exact all-parameter TracIn against the projected
  index at several sizes (Spearman over all training regions, per query class), and last-3-layer
  and final-layer TracIn against all-parameter TracIn (Spearman, top-10 overlap), for the demo
  case and ``--queries`` - 1 other held-out cases;
* ``storage``: the stored index (float16 rows, one float32 scale each) against float32 gradients
  recomputed exactly for ``--subset`` training cases: the rows' largest error, and for the
  ``--queries`` cases the scores' Spearman, top-10 agreement and largest relative error;
* ``similarity``: the faithfulness check (last-hidden-layer similarity vs TracIn rank) on the
  demo case, from the index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import PeakRSS, machine  # noqa: E402

from napari_segxai.core.influence.checkpoints import load_tracin_model  # noqa: E402
from napari_segxai.core.influence.exact import tracin_scores, training_example  # noqa: E402
from napari_segxai.core.influence.index import load_or_build_index, project  # noqa: E402
from napari_segxai.core.influence.query import influence  # noqa: E402
from napari_segxai.core.influence.regions import prepare_example  # noqa: E402
from napari_segxai.core.model_card import load_model_card  # noqa: E402
from napari_segxai.core.paths import demo_model_card_path  # noqa: E402

STAGES = ("index", "query", "captum", "spearman", "storage", "similarity")
CLASSES = [1, 2, 3]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def save(work: Path, name: str, data: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.json").write_text(json.dumps(data, indent=1, default=float))


CASE_PATH = None


def demo_case():
    """The query case: ``--case``, else the demo case."""
    from napari_segxai.core.case import load_case
    from napari_segxai.core.synth import demo_case_path

    return load_case(CASE_PATH or demo_case_path())


def stage_index(card, args) -> dict:
    model = load_tracin_model(card)
    start, cpu = time.perf_counter(), time.process_time()
    index = load_or_build_index(model, CLASSES, threshold=0.5, rebuild=args.rebuild, workers=args.workers,
                                progress=lambda d, n: log(f"index {d}/{n}") if d % 10 == 0 else None)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    size = index.path.stat().st_size
    out = {"status": index.meta.get("status"), "build_seconds": index.build_seconds, "this_run_seconds": wall, "this_run_cpu_seconds": cpu,
           "file_bytes": size, "gradient_bytes": index.nbytes, "shape": list(index.gradients.shape),
           "parameters": model.parameters, "layers": list(model.layer_names), "path": str(index.path),
           "built_with": index.meta.get("built_with"), "created": index.meta.get("created"),
           "empty_regions": int((index.voxels == 0).sum())}
    log(f"index {out['status']}: built in {index.build_seconds:.0f} s, {size / 1e6:.1f} MB, shape {out['shape']}")
    return out


def stage_query(card, args) -> dict:
    case = demo_case()
    model = load_tracin_model(card)
    start, cpu = time.perf_counter(), time.process_time()
    influence(case, card)  # cold: loads the model and the index, first passes at these shapes
    cold = (time.perf_counter() - start, time.process_time() - cpu)
    totals, cpus, parts, part_cpus, fresh = [], [], [], [], []
    with PeakRSS() as rss:
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            result = influence(case, card, model=model)
            totals.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    for _ in range(args.repeats):
        start = time.perf_counter()
        influence(case, card)  # the model loaded again each time, as a new widget query does
        fresh.append(time.perf_counter() - start)
    for _ in range(args.repeats):
        test = prepare_example(case, card, model.network, CLASSES, threshold=0.5)
        start, cpu = time.perf_counter(), time.process_time()
        index = load_or_build_index(model, CLASSES, threshold=0.5)
        index.scores(model.gradients(test))
        parts.append(time.perf_counter() - start)
        part_cpus.append(time.process_time() - cpu)
    out = {"seconds": statistics.median(totals), "all": totals, "cpu_seconds": statistics.median(cpus),
           "cold_seconds": cold[0], "cold_cpu_seconds": cold[1], "with_model_loading_seconds": statistics.median(fresh),
           "tracin_seconds": statistics.median(parts), "tracin_cpu_seconds": statistics.median(part_cpus),
           "tracin_all": parts, "peak_rss_mb": rss.peak / 2**20, "crop": [list(b) for b in test.crop],
           "test_voxels": test.voxels.tolist(), "case": case.name, "case_shape": list(case.shape),
           "top_edema": [vars(e) for e in result.proponents("edema", top=5)]}
    log(f"query {out['seconds']:.2f} s end to end (CPU {out['cpu_seconds']:.1f} s; cold {cold[0]:.1f} s; with model "
        f"loading {out['with_model_loading_seconds']:.1f} s), {out['tracin_seconds']:.2f} s TracIn part, crop {out['crop']}")
    return out


def stage_captum(card, args) -> dict:
    from captum.influence import TracInCP

    from napari_segxai.core.influence.gradients import RegionLoss
    from napari_segxai.core.weights import load_state_dict

    model = load_tracin_model(card)
    seeds = list(model.record.seeds[: args.captum_cases])
    examples = [training_example(model, s, CLASSES, threshold=0.5) for s in seeds]
    dataset = [(e.image[0], e.targets[k]) for e in examples for k in range(len(CLASSES))]
    lrs = {str(c.path): c.lr for c in model.record.checkpoints}

    def load(net, path):
        net.load_state_dict(load_state_dict(path))
        return lrs[path]

    case = demo_case()
    test = prepare_example(case, card, model.network, CLASSES, threshold=0.5)
    start, cpu = time.perf_counter(), time.process_time()
    tracin = TracInCP(model.gradient_network, torch.utils.data.DataLoader(dataset, batch_size=1), list(lrs),
                      checkpoints_load_func=load, layers=list(model.layer_names), loss_fn=RegionLoss(),
                      batch_size=1, sample_wise_grads_per_batch=False)
    scores = tracin.influence((test.image.expand(len(CLASSES), *test.image.shape[1:]), test.targets)).detach().numpy()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ours = load_or_build_index(model, CLASSES, threshold=0.5).scores(model.gradients(test))[:, : len(seeds)]
    scores = scores.reshape(len(CLASSES), len(seeds), len(CLASSES))
    scale = float(np.abs(scores).max())
    out = {"cases": len(seeds), "seconds": seconds, "cpu_seconds": cpu, "per_case": seconds / len(seeds),
           "extrapolated_cpu_seconds": cpu / len(seeds) * len(model.record.seeds),
           "extrapolated_seconds": seconds / len(seeds) * len(model.record.seeds),
           "max_abs_difference_vs_index": float(np.abs(scores - ours).max()), "max_abs_score": scale}
    log(f"captum {seconds:.1f} s on {len(seeds)} cases -> {out['extrapolated_seconds']:.0f} s for all; "
        f"max |captum - ours| {out['max_abs_difference_vs_index']:.2e} of {scale:.2e}")
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    k = min(k, len(a))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def stage_spearman(card, args) -> dict:
    from napari_segxai.core.synth import generate_case
    from napari_segxai.core.train import HELD_OUT_SEED_START

    sizes = [int(s) for s in args.sizes.split(",")]
    everything = load_tracin_model(card, layers="all")
    last = load_tracin_model(card, layers="last")
    final = load_tracin_model(card, layers="final")
    if args.check_tail:  # the tail of the all-parameter gradient is the last layers' gradient
        example = training_example(everything, int(everything.record.seeds[0]), CLASSES, threshold=0.5)
        assert torch.allclose(everything.gradients(example)[..., -last.parameters:], last.gradients(example), rtol=1e-4, atol=1e-9)
    size = everything.record.size
    queries = [demo_case()] + [generate_case(HELD_OUT_SEED_START + 50 + i, size=size).case for i in range(args.queries - 1)]
    rng = np.random.default_rng(0)
    seeds = sorted(rng.choice(everything.record.seeds, size=min(args.subset, len(everything.record.seeds)), replace=False).tolist())
    log(f"spearman: {len(seeds)} training cases, {len(queries)} queries, all = {everything.parameters} parameters")
    # The all-parameter gradient lists the layers in execution order, so the last layers' gradient is its tail.
    assert everything.layer_names[-len(last.layer_names):] == last.layer_names
    assert everything.layer_names[-1:] == final.layer_names
    tail_last, tail_final = last.parameters, final.parameters
    tests = []
    for case in queries:
        example = prepare_example(case, card, everything.network, CLASSES, threshold=0.5)
        g = everything.gradients(example)
        tests.append({"name": case.name, "voxels": example.voxels, "all": g, "last": g[..., -tail_last:],
                      "final": g[..., -tail_final:]})
    train_all, valid = [], []
    start = time.perf_counter()
    for i, seed in enumerate(seeds):
        example = training_example(everything, int(seed), CLASSES, threshold=0.5)
        train_all.append(everything.gradients(example))
        valid.append(example.voxels > 0)
        log(f"spearman: training case {i + 1}/{len(seeds)} ({time.perf_counter() - start:.0f} s)")
    train_all = torch.stack(train_all, 1)           # (T, n, K, D)
    t, n, k, d = train_all.shape
    valid = np.stack(valid).ravel()
    lrs = everything.learning_rates

    def flat_scores(test_grads, train_grads):       # (K_test, n*K)
        return tracin_scores(lrs, test_grads, train_grads.reshape(t, n * k, -1))

    rows = []
    projected_train = {}
    projected_seconds = {}
    for size in sizes:
        s0 = time.perf_counter()
        projected_train[size] = project(train_all.reshape(t * n * k, d), size).reshape(t, n, k, size)
        projected_seconds[size] = time.perf_counter() - s0
    for test in tests:
        exact_all = flat_scores(test["all"], train_all)
        exact_last = flat_scores(test["last"], train_all[..., -tail_last:])
        exact_final = flat_scores(test["final"], train_all[..., -tail_final:])
        for a, name in enumerate(("necrosis", "edema", "enhancing")):
            if test["voxels"][a] == 0:
                continue
            row = {"query": test["name"], "class": name, "regions": int(valid.sum())}
            ref = exact_all[a][valid]
            for size in sizes:
                tp = project(test["all"].reshape(-1, d), size).reshape(t, -1, size)
                row[f"spearman_k{size}"] = _spearman(flat_scores(tp, projected_train[size])[a][valid], ref)
            row["last_vs_all_spearman"] = _spearman(exact_last[a][valid], ref)
            row["last_vs_all_top10"] = _top_overlap(exact_last[a][valid], ref)
            row["final_vs_all_spearman"] = _spearman(exact_final[a][valid], ref)
            row["final_vs_all_top10"] = _top_overlap(exact_final[a][valid], ref)
            rows.append(row)
            log(f"spearman {row}")
    summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key not in ("query", "class", "regions")}
    summary.update({key.replace("spearman", "min_spearman"): float(np.min([r[key] for r in rows]))
                    for key in rows[0] if key.startswith("spearman_k")})
    return {"seeds": seeds, "sizes": sizes, "parameters_all": d, "rows": rows, "mean": summary,
            "projection_seconds_for_subset": projected_seconds, "queries": [q["name"] for q in tests]}


def stage_storage(card, args) -> dict:
    from napari_segxai.core.synth import generate_case
    from napari_segxai.core.train import HELD_OUT_SEED_START

    model = load_tracin_model(card)
    index = load_or_build_index(model, CLASSES, threshold=0.5)
    rng = np.random.default_rng(0)
    seeds = sorted(rng.choice(model.record.seeds, size=min(args.subset, len(model.record.seeds)), replace=False).tolist())
    columns = [index.seeds.index(s) for s in seeds]
    stored = index.training_gradients()[:, columns]                                 # (T, n, K, d)
    exact, valid = [], []
    for i, seed in enumerate(seeds):
        example = training_example(model, int(seed), CLASSES, threshold=0.5)
        exact.append(model.gradients(example))
        valid.append(example.voxels > 0)
        log(f"storage: training case {i + 1}/{len(seeds)}")
    exact = torch.stack(exact, 1).numpy()                                         # float32 (T, n, K, d)
    valid = np.stack(valid)
    peak = np.abs(exact).max(-1)
    row_error = float((np.abs(stored - exact).max(-1) / np.where(peak > 0, peak, 1)).max())
    queries = [demo_case()] + [generate_case(HELD_OUT_SEED_START + 50 + i, size=model.record.size).case
                               for i in range(args.queries - 1)]
    # For comparison only (not what is stored): int8 rows with the same per-row scale, a quarter of float32.
    int8 = np.round(exact / np.where(peak > 0, peak, 1)[..., None] * 127).astype(np.int8)
    int8 = torch.from_numpy(int8.astype(np.float32) * (peak / 127)[..., None]).flatten(1, 2)

    def compare(got, ref, prefix=""):
        return {f"{prefix}spearman": _spearman(got, ref), f"{prefix}top10_overlap": _top_overlap(got, ref),
                f"{prefix}max_relative_error": float(np.max(np.abs(got - ref) / np.abs(ref))),
                f"{prefix}max_error_over_max_score": float(np.abs(got - ref).max() / np.abs(ref).max()),
                f"{prefix}median_relative_error": float(np.median(np.abs(got - ref) / np.abs(ref)))}

    rows = []
    for case in queries:
        example = prepare_example(case, card, model.network, CLASSES, threshold=0.5)
        test = model.gradients(example)
        reference = tracin_scores(model.learning_rates, test, torch.from_numpy(exact).flatten(1, 2))   # (A, n*K)
        ours = index.scores(test)[:, columns].reshape(len(CLASSES), -1)
        quarter = tracin_scores(model.learning_rates, test, int8)
        for a, name in enumerate(("necrosis", "edema", "enhancing")):
            if example.voxels[a] == 0:
                continue
            ref, keep = reference[a][valid.ravel()], valid.ravel()
            row = {"query": case.name, "class": name, "regions": int(valid.sum()), **compare(ours[a][keep], ref),
                   **compare(quarter[a][keep], ref, "int8_")}
            rows.append(row)
            log(f"storage {row}")
    return {"seeds": seeds, "stored_dtype": str(index.gradients.dtype), "file_bytes": index.path.stat().st_size,
            "row_max_error_over_row_max": row_error, "rows": rows,
            "int8_min_spearman": min(r["int8_spearman"] for r in rows),
            "int8_max_error_over_max_score": max(r["int8_max_error_over_max_score"] for r in rows),
            "min_spearman": min(r["spearman"] for r in rows), "max_relative_error": max(r["max_relative_error"] for r in rows),
            "max_error_over_max_score": max(r["max_error_over_max_score"] for r in rows)}


def stage_similarity(card, args) -> dict:
    from napari_segxai.core.influence.features import similarity_check, similarity_table

    result = influence(demo_case(), card)
    rows = similarity_check(result, top=10)
    log("\n" + similarity_table(rows))
    return {"rows": [vars(r) for r in rows], "feature_layer": result.details["feature_layer"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", type=Path, default=demo_model_card_path("demo3d"), help="model card (default: the 3D demo)")
    parser.add_argument("--case", type=Path, default=None, help="the query case (default: the demo case)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "napari-segxai" / "bench-influence",
                        help="where each stage's JSON result is kept")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even when it is current")
    parser.add_argument("--workers", type=int, default=None, help="build the index on a local dask cluster of N workers")
    parser.add_argument("--repeats", type=int, default=3, help="timed queries (median reported)")
    parser.add_argument("--captum-cases", type=int, default=8, help="training cases captum runs on (extrapolated)")
    parser.add_argument("--subset", type=int, default=24, help="training cases of the Spearman and storage stages")
    parser.add_argument("--queries", type=int, default=2, help="query cases of the Spearman and storage stages (the demo case first)")
    parser.add_argument("--sizes", default="256,512,1024,2048,4096,8192", help="projection sizes of the Spearman stage")
    parser.add_argument("--check-tail", action="store_true", help="check once that the last layers' gradient is the tail of all")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    card = load_model_card(args.card)
    global CASE_PATH
    CASE_PATH = args.case
    log(machine())
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for name in stages:
        if name not in STAGES:
            parser.error(f"unknown stage {name!r}; use {', '.join(STAGES)}")
        start = time.perf_counter()
        result = globals()[f"stage_{name}"](card, args)
        result["stage_seconds"] = time.perf_counter() - start
        result["machine"] = machine()
        save(args.work, name, result)
    summary = {}
    for name in STAGES:
        path = args.work / f"{name}.json"
        if path.exists():
            summary[name] = json.loads(path.read_text())
    if "query" in summary and "captum" in summary:
        q, c = summary["query"], summary["captum"]
        log(f"ratio captum (extrapolated) / indexed query: {c['extrapolated_seconds'] / q['seconds']:.0f}x end to end, "
            f"{c['extrapolated_seconds'] / q['tracin_seconds']:.0f}x TracIn part")
    return 0


if __name__ == "__main__":
    sys.exit(main())
