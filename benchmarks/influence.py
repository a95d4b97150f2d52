"""TracIn speed and ranking quality on the bundled demo model (160 training cases, 6 checkpoints).

Run: ``.venv/bin/python benchmarks/influence.py`` (``--help`` for options; ``--stages`` runs a
part). Stages, each saved as JSON in ``--work`` so a later run can reuse it:

* ``index``: build the default index once (last 3 layers, exact gradients, threshold 0.5) for
  the whole training set: seconds, file size (an existing current index is reused and its
  recorded build time reported, unless ``--rebuild``);
* ``query``: one query for all classes of the full-size demo case (``segxai demo``'s case):
  median seconds of ``--repeats`` runs, end to end (segmentation of the case included) and the
  TracIn part alone (test gradients + product), peak resident memory;
* ``captum``: like with like on the WHOLE training set (``--captum-cases`` only for a smoke
  test), no extrapolation: our index (build + ``influence()`` queries) against captum's
  ``TracInCP`` (``sample_wise_grads_per_batch=False``; ``True`` fails or silently drops Conv3d
  gradients), both on the last 3 layers, and against ``TracInCPFast`` and its precomputing
  ``TracInCPFastRandProj``, both on the final layer with our final-layer index: same
  checkpoints, learning rates, per-class-region loss and training regions. The network's final
  layer is a 3x3x3 Conv3d (plus an identity residual), which those two classes cannot take (they
  assume one outer product per example, from a 2-D model output); a wrapper gives them each
  region's final-layer gradient as 4 rank-one rows, which makes their scores exact. For
  ``--captum-queries`` query cases (the demo case and held-out generated cases): build /
  precompute, one query, end to end for 1 and for all queries, in CPU and wall seconds (CPU is
  what compares on a shared machine: use ``--threads 1``), the break-even number of queries and
  the ratios to ours, peak resident memory (each part in its own process, ``--jobs`` at a time),
  and each engine's Spearman and top-10 agreement with exact all-parameter TracIn over the
  training regions (of ``--exact-cases`` random training cases when given), and its largest
  error against exact TracIn of its own layers. Parts (``--captum-parts``) are kept in
  ``--work``/captum and reused, so an interrupted run resumes (``--fresh`` reruns them). The
  published run: ``--stages captum --threads 1 --jobs 3 --exact-cases 64``;
* ``spearman``: on ``--subset`` training cases, exact all-parameter TracIn against the projected
  index at several sizes (Spearman over all training regions, per query class), and last-3-layer
  and final-layer TracIn against all-parameter TracIn (Spearman, top-10 overlap), for the demo
  case and ``--queries`` - 1 other held-out cases;
* ``storage``: the stored index (float16 rows, one float32 scale each) against float32 gradients
  recomputed exactly for ``--subset`` training cases: the rows' largest error, and for the
  ``--queries`` cases the scores' Spearman, top-10 agreement and largest relative error;
* ``similarity``: the faithfulness check (last-hidden-layer similarity vs TracIn rank) on the
  demo case, from the index;
* ``modes``: how many common modes ``specific`` removes (core/influence/scoring.py), chosen on
  ``--modes-queries`` held-out generated queries (seeds 900700 + 41 i, none of them a query of the
  specificity stage): the specificity table below for each of ``--modes`` (comma-separated);
* ``specificity``: does the evidence depend on the query? For each scoring (raw TracIn and the
  renormalised cosine, relative and specific, core/influence/scoring.py), from the default index,
  over the demo case, ``--specificity-generated`` held-out generated cases and every real case of
  ``../shared/realdata``: per class and pair of queries, the top-10 proponent overlap and the rank
  Spearman over all training regions (and the share of pairs within the goal: overlap <= 0.3,
  Spearman <= 0.5); per query and class, the Spearman of score with last-hidden-layer similarity
  and the mean similarity of the top-10 proponents and opponents. Prints a table of means and
  worst cases;
* ``buildcost``: the index build's cost per training case against its floor, on ``--subset``
  training cases in this process: seconds of ``gradient_rows`` for one case (regions, every
  checkpoint's gradients of every class region, the sketch, the features) against T x K x (one
  forward + one backward) of the whole network on the same crop; prints the ratio (target <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
from napari_segxai.core.influence.index import load_or_build_index  # noqa: E402
from napari_segxai.core.influence.projection import project, sketch  # noqa: E402
from napari_segxai.core.influence.query import influence  # noqa: E402
from napari_segxai.core.influence.regions import prepare_example  # noqa: E402

from napari_segxai.core.model.loading import load_model_card  # noqa: E402
from napari_segxai.core.io.paths import demo_model_card_path  # noqa: E402

STAGES = ("index", "query", "captum", "spearman", "storage", "similarity", "modes", "specificity", "buildcost")
CLASSES = [1, 2, 3]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def save(work: Path, name: str, data: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.json").write_text(json.dumps(data, indent=1, default=float))


CASE_PATH = None


def demo_case():
    """The query case: ``--case``, else the demo case."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.io.generated_cases import demo_case_path

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


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    k = min(k, len(a))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


# ----------------------------------------------------------------------------- captum, like with like
#
# Each part runs in its own process (its peak resident memory is its own) and leaves
# ``<work>/captum/<part>.json`` (+ ``.npz`` scores); a part already there for the same settings is
# reused, so a crash loses at most one part (the exact reference also keeps its progress).

CAPTUM_PARTS = ("prepare", "ours_last", "ours_final", "tracincp", "fast", "randproj", "exact")


def _captum_folder(args) -> Path:
    return args.work / "captum"


def _captum_settings(card, args) -> dict:
    from napari_segxai.core.influence.training_set import training_record

    seeds = list(training_record(card).seeds)
    n = len(seeds) if not args.captum_cases else min(args.captum_cases, len(seeds))
    return {"cases": n, "queries": int(args.captum_queries), "threads": int(args.threads), "card": str(args.card),
            "case": str(CASE_PATH) if CASE_PATH else None}


def _captum_record(card, args):
    from dataclasses import replace

    from napari_segxai.core.influence.training_set import training_record

    record = training_record(card)
    return replace(record, seeds=tuple(record.seeds[: _captum_settings(card, args)["cases"]]))


def _query_cases(args) -> list:
    """The demo case (or ``--case``) and ``--captum-queries`` - 1 held-out generated cases, written once to the work folder."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.training.synth import generate_case
    from napari_segxai.core.io.generated_cases import write_case
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START

    cases = [demo_case()]
    for i in range(args.captum_queries - 1):
        seed = HELD_OUT_SEED_START + 50 + i
        folder = _captum_folder(args) / "queries" / f"synth-{seed:08d}"
        if not (folder / "ground_truth.json").is_file():
            write_case(generate_case(seed, size="full"), folder)
        cases.append(load_case(folder))
    return cases


def _example_path(args, seed: int) -> Path:
    return _captum_folder(args) / "examples" / f"{int(seed)}.pt"


def _load_example(args, seed: int):
    """A training region example saved by the ``prepare`` part (exactly what ``training_example`` returned)."""
    from napari_segxai.core.influence.regions import RegionExample

    data = torch.load(_example_path(args, seed), weights_only=False)
    data["targets"] = data["targets"].long()
    return RegionExample(**data)


class _CaseLoss(torch.nn.Module):
    """TracInCP's loss: the three per-class-region losses (``region_loss``) of each case, one loss entry each.

    captum (``sample_wise_grads_per_batch=False``) takes one gradient per loss entry, so one
    forward pass per case serves its three regions, as in our engines.
    """

    reduction = "none"

    def __init__(self, activation: str):
        super().__init__()
        self.activation = activation

    def forward(self, logits, targets):  # (B, C, *s), (B, K, *s) -> (B * K,)
        from napari_segxai.core.influence.gradients import region_loss

        return torch.stack([region_loss(logits, targets[:, k], self.activation) for k in range(targets.shape[1])], 1).reshape(-1)


class _Examples(torch.utils.data.Dataset):
    """(image, targets) of the saved training examples, read from disk when asked (as a captum user would)."""

    def __init__(self, args, seeds):
        self.args, self.seeds = args, list(seeds)

    def __len__(self):
        return len(self.seeds)

    def __getitem__(self, i):
        example = _load_example(self.args, self.seeds[i])
        return example.image[0], example.targets


class _FinalConvRows(torch.nn.Module):
    """The network seen by captum's TracInCPFast*: its final 3x3x3 Conv3d recast as a Linear on rows.

    TracInCPFast assumes the final layer is Linear, so that an example's weight gradient is one
    outer product (gradient of the loss w.r.t. the model's 2-D output) x (the layer's input). The
    final Conv3d's gradient for a region is instead sum over voxels v of g_v (x) patch_v (rank up
    to 4 = output channels), plus the bias gradient sum_v g_v. Here each region becomes 4 rows,
    row c = [gradient of output channel c's weights (4x3x3x3 = 108 entries), of its bias]: the
    closed form ``conv3d_weight(input, shape, g)`` of one forward pass and the gradient w.r.t.
    the logits (no backward pass through the network, as in captum's trick). A Linear(109, C)
    reads the rows and ``_RowLoss`` makes the gradient w.r.t. its output row c the unit vector
    e_c, so captum's outer product of row c is exactly that row, and the sum of captum's scores
    over the C x C rows of two regions is exact final-layer TracIn (weights and bias).
    Inputs are example ids (train: position in the training set; test: negative), so cases of
    different crop sizes fit in one batch.
    """

    def __init__(self, model, args, seeds):
        super().__init__()
        modules = dict(model.gradient_network.named_modules())
        self.network = model.gradient_network
        self.conv = modules[model.layer_names[-1]]
        assert isinstance(self.conv, torch.nn.Conv3d) and self.conv.stride == (1, 1, 1) and self.conv.dilation == (1, 1, 1)
        self.card, self.args, self.seeds, self.tests = model.card, args, list(seeds), {}
        out_channels = self.conv.out_channels
        self.fc = torch.nn.Linear(self.conv.weight[0].numel() + 1, out_channels, bias=False)

    def example(self, i: int):
        return self.tests[i] if i < 0 else _load_example(self.args, self.seeds[i])

    def rows(self, example) -> torch.Tensor:
        from napari_segxai.core.influence.gradients import forward, region_loss

        k, c = example.targets.shape[0], self.conv.out_channels
        out = torch.zeros(k * c, self.fc.in_features)
        if not example.voxels.any():
            return out
        captured = {}
        handle = self.conv.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
        try:
            with torch.no_grad():
                logits = forward(self.network, example.image, self.card.spatial_dims, self.card.slice_axis)
        finally:
            handle.remove()
        logits = logits.detach().requires_grad_()
        for r in range(k):
            if example.voxels[r] == 0:
                continue
            with torch.enable_grad():
                loss = region_loss(logits, example.targets[r : r + 1], self.card.activation)[0]
                (g,) = torch.autograd.grad(loss, logits)  # = d loss / d (final conv output): the residual is an identity
            weight = torch.nn.grad.conv3d_weight(captured["x"], self.conv.weight.shape, g, stride=1, padding=self.conv.padding)
            out[r * c : (r + 1) * c] = torch.cat([weight.flatten(1), g.sum((0, *range(2, g.ndim)))[:, None]], 1)
        return out

    def forward(self, ids):
        return self.fc(torch.cat([self.rows(self.example(int(i))) for i in ids]))


class _RowLoss(torch.nn.Module):
    """Sum over rows r of out[r, r mod C]: its gradient w.r.t. row r is the unit vector e_(r mod C)."""

    reduction = "sum"

    def forward(self, out, targets):
        pick = torch.arange(out.shape[0]) % out.shape[1]
        return out[torch.arange(out.shape[0]), pick].sum()


def _brute_force_neighbours():
    from captum.influence._utils.nearest_neighbors import NearestNeighbors

    class BruteForce(NearestNeighbors):
        """Largest dot products by brute force (captum's default needs the annoy package, not installed)."""

        def setup(self, data):
            self.data = data

        def get_nearest_neighbors(self, query, k):
            scores = query @ self.data.T
            top = scores.topk(k, dim=1)
            return top.indices, top.values

    return BruteForce()


def _rows_to_regions(scores: torch.Tensor, queries: int, k: int, n: int, c: int) -> np.ndarray:
    """captum row scores (Q*K*C, N*K*C) -> (Q, K, N, K) region scores (the sum over the C x C rows)."""
    return scores.detach().double().reshape(queries, k, c, n, k, c).sum((2, 5)).numpy()


class _Clock:
    """Wall and CPU seconds of a block (CPU: this process, all its threads): ``.pair`` = [wall, cpu]."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.pair = [time.perf_counter() - self.wall, time.process_time() - self.cpu]


def _part_ours(card, args, layers: str) -> tuple[dict, dict]:
    from napari_segxai.core.influence.index import build_index, index_status, read_index

    record = _captum_record(card, args)
    folder = _captum_folder(args) / f"index-{layers}"
    with _Clock() as setup:
        model = load_tracin_model(card, layers=layers, record=record)
    with _Clock() as build:
        index = build_index(model, CLASSES, threshold=0.5, index_dir=folder,
                            progress=lambda d, n: log(f"ours ({layers}) index {d}/{n}") if d % 20 == 0 else None)
    out = {"layers": layers, "layer_names": list(model.layer_names), "parameters": model.parameters, "setup": setup.pair,
           "build": build.pair, "build_peak_rss_mb": _peak_mb(), "file_bytes": index.path.stat().st_size}
    if layers == "last":  # the shipped index (all training cases), where it is current: the same rows?
        full = load_tracin_model(card, layers=layers)
        path, status = index_status(full, CLASSES, threshold=0.5)
        if status == "current" and path.parent != folder:
            shipped = read_index(path).training_gradients()[:, : len(record.seeds)]
            out["shipped_index"] = str(path)
            out["max_difference_vs_shipped_over_max"] = float(np.abs(shipped - index.training_gradients()).max()
                                                              / np.abs(shipped).max())
    times, scores, voxels = [], [], []
    for case in _query_cases(args):
        with _Clock() as clock:
            result = influence(case, card, layers=layers, model=model, index_dir=folder, scoring="raw")
        times.append(clock.pair)
        scores.append(result.scores)
        voxels.append(result.test_voxels)
        log(f"ours ({layers}) query {case.name}: {clock.pair[0]:.2f} s wall, {clock.pair[1]:.2f} s CPU")
    out["queries"] = times
    return out, {"scores": np.stack(scores), "test_voxels": np.stack(voxels), "train_voxels": index.voxels}


def _captum_model(card, args, layers: str):
    record = _captum_record(card, args)
    with _Clock() as setup:
        model = load_tracin_model(card, layers=layers, record=record)
    paths = [str(c.path) for c in record.checkpoints]
    states = dict(zip(paths, model.states))
    lrs = dict(zip(paths, model.learning_rates))

    def load(net, path):
        target = net.network if isinstance(net, _FinalConvRows) else net
        target.load_state_dict(states[path])
        return lrs[path]

    return model, record, paths, load, setup.pair


def _part_tracincp(card, args) -> tuple[dict, dict]:
    from captum.influence import TracInCP
    from torch.utils.data import DataLoader

    model, record, paths, load, setup = _captum_model(card, args, "last")
    with _Clock() as init:
        tracin = TracInCP(model.gradient_network, _Examples(args, record.seeds), paths, checkpoints_load_func=load,
                          layers=list(model.layer_names), loss_fn=_CaseLoss(model.card.activation), batch_size=1,
                          sample_wise_grads_per_batch=False)
    cases = _query_cases(args)
    out = {"layers": "last", "layer_names": list(model.layer_names), "parameters": model.parameters, "setup": setup,
           "init": init.pair, "queries": len(cases)}
    scores = {}
    for name, chosen in (("one", cases[:1]), ("all", cases)):
        with _Clock() as clock:
            tests = [prepare_example(c, card, model.network, CLASSES, threshold=0.5) for c in chosen]
            raw = tracin.influence(DataLoader([(t.image[0], t.targets) for t in tests], batch_size=1))
        out[name] = clock.pair
        scores[name] = raw.detach().double().reshape(len(chosen), len(CLASSES), len(record.seeds), len(CLASSES)).numpy()
        log(f"captum TracInCP, {len(chosen)} queries in one call: {clock.pair[0]:.1f} s wall, {clock.pair[1]:.1f} s CPU")
    out["one_vs_all_max_difference"] = float(np.abs(scores["one"][0] - scores["all"][0]).max())
    return out, {"scores": scores["all"]}


def _part_fast(card, args, rand_proj: bool) -> tuple[dict, dict]:
    from captum.influence import TracInCPFast, TracInCPFastRandProj

    model, record, paths, load, setup = _captum_model(card, args, "final")
    n, k = len(record.seeds), len(CLASSES)
    rows = _FinalConvRows(model, args, record.seeds)
    c = rows.conv.out_channels
    assert rows.fc.in_features * c == model.parameters  # the rows hold every parameter of the final layer
    train = [(torch.tensor(i), torch.tensor(0)) for i in range(n)]
    batch = args.fast_batch or n
    cases = _query_cases(args)
    out = {"layers": "final", "layer_names": list(model.layer_names), "parameters": model.parameters, "setup": setup,
           "train_batch_size": batch}
    with _Clock() as init:
        if rand_proj:
            tracin = TracInCPFastRandProj(rows, rows.fc, train, paths, checkpoints_load_func=load, loss_fn=_RowLoss(),
                                          batch_size=batch, nearest_neighbors=_brute_force_neighbours(), projection_dim=None)
        else:
            tracin = TracInCPFast(rows, rows.fc, train, paths, checkpoints_load_func=load, loss_fn=_RowLoss(), batch_size=batch)
    out["init"] = init.pair

    def query(chosen, first):
        ids = []
        for j, case in enumerate(chosen):
            rows.tests[-1 - first - j] = prepare_example(case, card, model.network, CLASSES, threshold=0.5)
            ids.append(-1 - first - j)
        raw = tracin.influence((torch.tensor(ids), torch.zeros(len(ids), dtype=torch.long)), k=None)  # all scores
        return _rows_to_regions(raw, len(chosen), k, n, c)

    if rand_proj:  # precomputed: one query at a time, as the widget asks
        times, scores = [], []
        for j, case in enumerate(cases):
            with _Clock() as clock:
                scores.append(query([case], j)[0])
            times.append(clock.pair)
            log(f"captum TracInCPFastRandProj query {case.name}: {clock.pair[0]:.2f} s wall, {clock.pair[1]:.2f} s CPU")
        out["queries"] = times
        out["embedding_shape"] = list(tracin.src_intermediate_quantities.shape)
        return out, {"scores": np.stack(scores)}
    scores = {}
    for name, chosen in (("one", cases[:1]), ("all", cases)):
        with _Clock() as clock:
            scores[name] = query(chosen, 0)
        out[name] = clock.pair
        log(f"captum TracInCPFast, {len(chosen)} queries in one call: {clock.pair[0]:.1f} s wall, {clock.pair[1]:.1f} s CPU")
    out["queries"] = len(cases)
    out["one_vs_all_max_difference"] = float(np.abs(scores["one"][0] - scores["all"][0]).max())
    return out, {"scores": scores["all"]}


def _part_prepare(card, args) -> tuple[dict, dict]:
    record = _captum_record(card, args)
    with _Clock() as setup:
        model = load_tracin_model(card, layers="final", record=record)
    prepare, voxels, shapes = [0.0, 0.0], [], []
    (_captum_folder(args) / "examples").mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(record.seeds):
        with _Clock() as clock:
            example = training_example(model, int(seed), CLASSES, threshold=0.5)
        prepare = [prepare[0] + clock.pair[0], prepare[1] + clock.pair[1]]
        data = dict(vars(example))
        data["targets"] = example.targets.to(torch.int8)  # -100..3: exact
        torch.save(data, _example_path(args, seed))
        voxels.append(example.voxels)
        shapes.append(list(example.image.shape[2:]))
        if (i + 1) % 20 == 0:
            log(f"prepare {i + 1}/{len(record.seeds)} ({prepare[0]:.0f} s)")
    return ({"setup": setup.pair, "prepare": prepare, "crop_voxels_median": float(np.median([np.prod(s) for s in shapes])),
             "crop_sides": [int(np.min(shapes)), int(np.max(shapes))], "crops": shapes},
            {"train_voxels": np.stack(voxels)})


def _exact_seeds(record, args) -> list:
    """The training cases of the exact all-parameter reference: all, or ``--exact-cases`` drawn at random (seed 0)."""
    seeds = list(record.seeds)
    if not args.exact_cases or args.exact_cases >= len(seeds):
        return seeds
    return sorted(int(s) for s in np.random.default_rng(0).choice(seeds, size=args.exact_cases, replace=False))


def _part_exact(card, args) -> tuple[dict, dict]:
    from napari_segxai.core.influence.exact import tracin_scores

    record = _captum_record(card, args)
    seeds = _exact_seeds(record, args)
    model = load_tracin_model(card, layers="all", record=record)
    last = load_tracin_model(card, layers="last", record=record)
    final = load_tracin_model(card, layers="final", record=record)
    # The all-parameter gradient lists the layers in execution order: the last layers' gradients are its tail.
    assert model.layer_names[-len(last.layer_names):] == last.layer_names and model.layer_names[-1:] == final.layer_names
    tails = {"all": model.parameters, "last": last.parameters, "final": final.parameters}
    with _Clock() as clock:
        tests, test_voxels = [], []
        for case in _query_cases(args):
            example = prepare_example(case, card, model.network, CLASSES, threshold=0.5)
            tests.append(model.gradients(example))
            test_voxels.append(example.voxels)
        tests = torch.cat(tests, 1)                                          # (T, Q*K, D)
        tests = {name: tests[..., -d:].double().contiguous() for name, d in tails.items()}  # once, not per training case
        q, k, n = len(test_voxels), len(CLASSES), len(seeds)
        partial = _captum_folder(args) / "exact.partial.npz"
        scores = {name: np.zeros((q * k, n, k)) for name in tails}
        done = 0
        if partial.is_file():
            with np.load(partial) as data:
                if data["scores_all"].shape == scores["all"].shape and list(data["seeds"]) == seeds:
                    done = int(data["done"])
                    scores = {name: data[f"scores_{name}"].copy() for name in tails}
                    log(f"exact: resuming after {done} training cases")
        for i in range(done, n):
            grads = model.gradients(_load_example(args, seeds[i]))           # (T, K, D)
            for name, d in tails.items():
                scores[name][:, i] = tracin_scores(model.learning_rates, tests[name], grads[..., -d:])
            if (i + 1) % 8 == 0 or i + 1 == n:
                np.savez(partial, done=i + 1, seeds=np.asarray(seeds), **{f"scores_{name}": s for name, s in scores.items()})
                log(f"exact: {i + 1}/{n} training cases ({time.perf_counter() - clock.wall:.0f} s)")
    return ({"parameters": tails, "seconds": clock.pair, "resumed_after": done, "seeds": seeds},
            {**{f"scores_{name}": s.reshape(q, k, n, k) for name, s in scores.items()}, "test_voxels": np.stack(test_voxels),
             "columns": np.asarray([list(record.seeds).index(s) for s in seeds])})


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _part_settings(card, args, part: str) -> dict:
    settings = _captum_settings(card, args)
    if part == "exact":
        settings["exact_cases"] = len(_exact_seeds(_captum_record(card, args), args))
    return settings


def run_captum_part(card, args) -> None:
    """One part of the ``captum`` stage, in this (child) process: its JSON and arrays into ``<work>/captum``."""
    part = args.captum_part
    started, load = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    with _Clock() as clock:
        if part == "prepare":
            out, arrays = _part_prepare(card, args)
        elif part in ("ours_last", "ours_final"):
            out, arrays = _part_ours(card, args, part.split("_")[1])
        elif part == "tracincp":
            out, arrays = _part_tracincp(card, args)
        elif part in ("fast", "randproj"):
            out, arrays = _part_fast(card, args, part == "randproj")
        else:
            out, arrays = _part_exact(card, args)
    out.update(settings=_part_settings(card, args, part), part=clock.pair, peak_rss_mb=_peak_mb(), started=started,
               load_at_start=list(load), load_at_end=list(os.getloadavg()), machine=machine())
    folder = _captum_folder(args)
    np.savez(folder / f"{part}.npz", **arrays)
    (folder / f"{part}.json").write_text(json.dumps(out, indent=1, default=float))
    log(f"part {part}: {clock.pair[0]:.0f} s wall, {clock.pair[1]:.0f} s CPU, peak RSS {out['peak_rss_mb']:.0f} MB, "
        f"load {load[0]:.1f} -> {os.getloadavg()[0]:.1f}")


def _agreement(scores: np.ndarray, reference: np.ndarray, test_voxels: np.ndarray, train_voxels: np.ndarray) -> dict:
    """Spearman and top-10 overlap of (Q, K, N, K) scores against the reference, over non-empty regions, per ranking."""
    keep = (train_voxels > 0).ravel()
    spearman, top = [], []
    for q in range(scores.shape[0]):
        for a in range(scores.shape[1]):
            if test_voxels[q, a] == 0:
                continue
            got, ref = scores[q, a].ravel()[keep], reference[q, a].ravel()[keep]
            spearman.append(_spearman(got, ref))
            top.append(_top_overlap(got, ref))
    return {"rankings": len(spearman), "regions": int(keep.sum()), "spearman_mean": float(np.mean(spearman)),
            "spearman_min": float(np.min(spearman)), "top10_mean": float(np.mean(top)), "top10_min": float(np.min(top))}


def _break_even(build: float, query: float, other_build: float, other_query: float):
    """Smallest n >= 1 with build + n * query <= other_build + n * other_query (None: never)."""
    if build + query <= other_build + other_query:
        return 1
    if other_query <= query:
        return None
    return int(math.ceil((build - other_build) / (other_query - query)))


#: Parts that read the training examples the ``prepare`` part saves.
_NEEDS_EXAMPLES = ("tracincp", "fast", "randproj", "exact")


def stage_captum(card, args) -> dict:
    import subprocess

    from napari_segxai.core.influence.training_set import training_case

    folder = _captum_folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    settings = _captum_settings(card, args)
    record = _captum_record(card, args)
    start = time.perf_counter()
    for seed in record.seeds:  # regenerated once and cached: not part of any engine's cost
        training_case(card, seed)
    _query_cases(args)
    log(f"captum: {settings['cases']} training cases and {settings['queries']} query cases ready "
        f"({time.perf_counter() - start:.0f} s, cached)")
    parts = [p.strip() for p in args.captum_parts.split(",") if p.strip()]
    for part in parts:
        if part not in CAPTUM_PARTS:
            raise SystemExit(f"unknown captum part {part!r}; use {', '.join(CAPTUM_PARTS)}")
    todo = []
    for part in CAPTUM_PARTS:
        path = folder / f"{part}.json"
        current = path.is_file() and json.loads(path.read_text()).get("settings") == _part_settings(card, args, part)
        if current and (part not in parts or not args.fresh):
            log(f"captum part {part}: reusing {path}")
        elif part not in parts:
            raise SystemExit(f"captum part {part} has no result for these settings in {folder}; run it (--captum-parts)")
        else:
            if part == "exact" and args.fresh:
                (folder / "exact.partial.npz").unlink(missing_ok=True)
            todo.append(part)
    # Longest first, ``--jobs`` at a time (each part times itself in wall and CPU seconds, with the load beside them).
    order = sorted(todo, key=("prepare", "tracincp", "exact", "fast", "ours_last", "randproj", "ours_final").index)
    running: dict = {}
    while order or running:
        for part, process in list(running.items()):
            if process.poll() is not None:
                del running[part]
                if process.returncode:
                    for other in running.values():
                        other.terminate()
                    raise SystemExit(f"captum part {part} failed (exit status {process.returncode})")
        ready = [p for p in order if p not in _NEEDS_EXAMPLES or ("prepare" not in order and "prepare" not in running)]
        if ready and len(running) < max(1, args.jobs):
            part = ready[0]
            order.remove(part)
            command = [sys.executable, str(Path(__file__).resolve()), "--captum-part", part, "--card", str(args.card),
                       "--work", str(args.work), "--threads", str(args.threads), "--captum-cases", str(settings["cases"]),
                       "--captum-queries", str(args.captum_queries), "--fast-batch", str(args.fast_batch),
                       "--exact-cases", str(args.exact_cases)]
            if CASE_PATH:
                command += ["--case", str(CASE_PATH)]
            log(f"captum part {part}: {' '.join(command[2:])}")
            running[part] = subprocess.Popen(command)
            continue
        time.sleep(2)
    return captum_report(folder, settings)


def _times(part: dict, *keys) -> np.ndarray:
    """[wall, cpu] seconds summed over the named timings of a part (a list of pairs counts as their sum)."""
    total = np.zeros(2)
    for key in keys:
        value = np.asarray(part[key], dtype=float)
        total += value.sum(0) if value.ndim == 2 else value
    return total


def captum_report(folder: Path, settings: dict) -> dict:
    """The like-with-like table from the parts' results (every number printed here)."""
    parts = {p: json.loads((folder / f"{p}.json").read_text()) for p in CAPTUM_PARTS}
    arrays = {p: dict(np.load(folder / f"{p}.npz")) for p in CAPTUM_PARTS}
    prep = _times(parts["prepare"], "prepare")
    exact = arrays["exact"]
    columns = exact["columns"]
    test_voxels, train_voxels = exact["test_voxels"], arrays["prepare"]["train_voxels"]
    assert np.array_equal(arrays["ours_last"]["test_voxels"], test_voxels)
    assert np.array_equal(arrays["ours_last"]["train_voxels"], train_voxels)
    reference = exact["scores_all"]
    rows = []

    def row(name, key, build, one, queries, total, same_layer, pair=None):
        scores = arrays[key]["scores"][:, :, columns]
        same = exact[f"scores_{same_layer}"]
        rows.append({"method": name, "part": key, "layers": same_layer, "parameters": parts[key]["parameters"],
                     "build": list(build), "query": list(one), "one_end_to_end": list(build + one),
                     "all_end_to_end": list(total), "queries_asked": queries, "peak_rss_mb": parts[key]["peak_rss_mb"],
                     "pair": pair, "max_error_vs_exact_same_layers": float(np.abs(scores - same).max() / np.abs(same).max()),
                     **_agreement(scores, reference, test_voxels, train_voxels[columns])})

    for layers in ("last", "final"):
        p = parts[f"ours_{layers}"]
        build = _times(p, "setup", "build")
        queries = np.asarray(p["queries"])
        row(f"ours: index ({layers})", f"ours_{layers}", build, np.median(queries, 0), "one at a time",
            build + queries.sum(0), layers)
    for key, name, layers, pair in (("tracincp", "captum TracInCP", "last", "ours_last"),
                                    ("fast", "captum TracInCPFast", "final", "ours_final")):
        p = parts[key]
        build = prep + _times(p, "setup", "init")
        row(name, key, build, np.asarray(p["one"]), "in one call", build + np.asarray(p["all"]), layers, pair)
    p = parts["randproj"]
    build = prep + _times(p, "setup", "init")
    queries = np.asarray(p["queries"])
    row("captum TracInCPFastRandProj", "randproj", build, np.median(queries, 0), "one at a time", build + queries.sum(0),
        "final", "ours_final")
    by_part = {r["part"]: r for r in rows}
    for r in rows:
        if r["pair"]:
            ours = by_part[r["pair"]]
            r["break_even_queries"] = [_break_even(ours["build"][m], ours["query"][m], r["build"][m], r["query"][m])
                                       for m in (0, 1)]
    for r in rows:
        if r["pair"]:
            ours = by_part[r["pair"]]
            r["ratio_to_ours"] = {key: [r[key][m] / ours[key][m] for m in (0, 1)]
                                  for key in ("build", "query", "one_end_to_end", "all_end_to_end")}
    references = {f"exact {layers} ({parts['exact']['parameters'][layers]:,} parameters)":
                  _agreement(exact[f"scores_{layers}"], reference, test_voxels, train_voxels[columns])
                  for layers in ("last", "final")}
    table = _captum_table(rows, settings["queries"])
    log("\n" + table)
    n_exact = len(parts["exact"]["seeds"])
    log(f"Times: CPU seconds (wall seconds), torch threads {settings['threads']}. Build: everything before the first "
        f"query (model and checkpoints loaded; the {settings['cases']} training cases' regions prepared, "
        f"{prep[1]:.0f} s CPU ({prep[0]:.0f} s) of it in every build; our index built and saved, region features "
        "included; captum's object made, TracInCPFastRandProj's embeddings computed). One query: median, the query's "
        "regions prepared (ours: influence() end to end); TracInCP and TracInCPFast: a call with one query. TracInCP and "
        f"TracInCPFast take the {settings['queries']} queries in one call (all known in advance), ours and "
        "TracInCPFastRandProj one at a time. Break-even: the fewest queries, asked one at a time, after which ours "
        f"(same layers) costs no more in total. Agreement: over the {n_exact} training cases' non-empty regions "
        f"{'(all of them)' if n_exact == settings['cases'] else '(drawn at random, seed 0; the times are on all ' + str(settings['cases']) + ')'}, "
        f"{rows[0]['rankings']} rankings (queries x classes with a region). Max error: largest |score - exact TracIn of "
        "the same layers| over the largest |exact score|.")
    for r in rows:
        if r["pair"]:
            ratio = r["ratio_to_ours"]
            log(f"{r['method']} / {by_part[r['pair']]['method']}, CPU (wall): one query {ratio['query'][1]:.1f}x "
                f"({ratio['query'][0]:.1f}x), build {ratio['build'][1]:.2f}x ({ratio['build'][0]:.2f}x), 1 query end to end "
                f"{ratio['one_end_to_end'][1]:.2f}x ({ratio['one_end_to_end'][0]:.2f}x), {settings['queries']} queries end to end "
                f"{ratio['all_end_to_end'][1]:.2f}x ({ratio['all_end_to_end'][0]:.2f}x)")
    for name, a in references.items():
        log(f"reference: {name} vs exact all-parameter: Spearman {a['spearman_mean']:.3f} (min {a['spearman_min']:.3f}), "
            f"top-10 {a['top10_mean']:.2f} (min {a['top10_min']:.2f})")
    log(f"exact all-parameter reference ({parts['exact']['parameters']['all']:,} parameters, {n_exact} training cases): "
        f"{parts['exact']['seconds'][1]:.0f} s CPU ({parts['exact']['seconds'][0]:.0f} s)")
    for key in ("tracincp", "fast"):
        log(f"{key}: one-query call vs the same query in the {settings['queries']}-query call: max |difference| "
            f"{parts[key]['one_vs_all_max_difference']:.2e}")
    if "max_difference_vs_shipped_over_max" in parts["ours_last"]:
        log(f"built index vs the shipped index: max |difference| / max {parts['ours_last']['max_difference_vs_shipped_over_max']:.2e}")
    log(f"training crops (network input of each case's regions): {parts['prepare']['crop_sides'][0]} to "
        f"{parts['prepare']['crop_sides'][1]} voxels per side, median {parts['prepare']['crop_voxels_median']:,.0f} voxels")
    log(f"index files: last {parts['ours_last']['file_bytes'] / 1e6:.1f} MB, final {parts['ours_final']['file_bytes'] / 1e6:.1f} MB; "
        f"TracInCPFastRandProj embeddings {parts['randproj']['embedding_shape']} float32")
    for p in CAPTUM_PARTS:
        log(f"part {p}: started {parts[p]['started']}, load average {parts[p]['load_at_start'][0]:.1f} -> "
            f"{parts[p]['load_at_end'][0]:.1f}, {parts[p]['part'][0]:.0f} s wall, {parts[p]['part'][1]:.0f} s CPU")
    log(f"machine: {parts['ours_last']['machine']}; captum {_captum_version()}")
    return {"settings": settings, "rows": rows, "references": references, "prepare": list(prep), "table": table,
            "parts": {p: {k: v for k, v in parts[p].items() if k != "crops"} for p in CAPTUM_PARTS}}


def _captum_version() -> str:
    import captum

    return captum.__version__


def _captum_table(rows: list, queries: int) -> str:
    def s(x):
        return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"

    def pair(v):
        return f"{s(v[1])} ({s(v[0])})"

    lines = [f"| method | layers (parameters) | build / precompute | one query | 1 query end to end | "
             f"{queries} queries end to end | break-even vs ours, queries | peak RSS, MB | Spearman vs exact all-parameter, "
             f"mean (min) | top-10 overlap, mean (min) | max error vs exact same-layer TracIn |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        even = "" if not r["pair"] else " (".join("never" if b is None else str(b) for b in r["break_even_queries"][::-1]) + ")"
        lines.append(f"| {r['method']} | {r['layers']} ({r['parameters']:,}) | {pair(r['build'])} | {pair(r['query'])} | "
                     f"{pair(r['one_end_to_end'])} | {pair(r['all_end_to_end'])} ({r['queries_asked']}) | {even} | "
                     f"{r['peak_rss_mb']:,.0f} | {r['spearman_mean']:.3f} ({r['spearman_min']:.3f}) | "
                     f"{r['top10_mean']:.2f} ({r['top10_min']:.2f}) | {r['max_error_vs_exact_same_layers']:.1e} |")
    return "\n".join(lines)


def stage_spearman(card, args) -> dict:
    from napari_segxai.core.training.synth import generate_case
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START

    sizes = [int(s) for s in args.sizes.split(",")]
    everything = load_tracin_model(card, layers="all")
    last = load_tracin_model(card, layers="last")
    final = load_tracin_model(card, layers="final")
    depths = {k: load_tracin_model(card, layers="last", last_k=k).parameters for k in args.last_ks}
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
    sketched_train = {}
    for size in sizes:
        s0 = time.perf_counter()
        projected_train[size] = project(train_all.reshape(t * n * k, d), size).reshape(t, n, k, size)
        projected_seconds[size] = time.perf_counter() - s0
        sketched_train[size] = sketch(train_all.reshape(t * n * k, d), size).reshape(t, n, k, size)
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
                ts = sketch(test["all"].reshape(-1, d), size).reshape(t, -1, size)
                row[f"spearman_sketch{size}"] = _spearman(flat_scores(ts, sketched_train[size])[a][valid], ref)
            row["last_vs_all_spearman"] = _spearman(exact_last[a][valid], ref)
            row["last_vs_all_top10"] = _top_overlap(exact_last[a][valid], ref)
            for depth, tail in depths.items():
                deep = flat_scores(test["all"][..., -tail:], train_all[..., -tail:])[a][valid]
                row[f"last{depth}_vs_all_spearman"] = _spearman(deep, ref)
                row[f"last{depth}_vs_all_top10"] = _top_overlap(deep, ref)
            row["final_vs_all_spearman"] = _spearman(exact_final[a][valid], ref)
            row["final_vs_all_top10"] = _top_overlap(exact_final[a][valid], ref)
            rows.append(row)
            log(f"spearman {row}")
    summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key not in ("query", "class", "regions")}
    summary.update({key.replace("spearman", "min_spearman"): float(np.min([r[key] for r in rows]))
                    for key in rows[0] if key.startswith(("spearman_k", "spearman_sketch")) or key.endswith("vs_all_spearman")})
    log("spearman summary: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return {"seeds": seeds, "sizes": sizes, "parameters_all": d, "last_k_parameters": depths, "rows": rows, "mean": summary,
            "projection_seconds_for_subset": projected_seconds, "queries": [q["name"] for q in tests]}


def stage_storage(card, args) -> dict:
    from napari_segxai.core.training.synth import generate_case
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START

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


def stage_buildcost(card, args) -> dict:
    from napari_segxai.core.influence.gradients import forward, region_loss
    from napari_segxai.core.influence.index import resolve_projection
    from napari_segxai.core.influence.rows import gradient_rows

    model = load_tracin_model(card)
    projection = resolve_projection(model.parameters, None)
    seeds = list(model.record.seeds)[: args.subset]
    gradient_rows(model, seeds[:1], CLASSES, threshold=0.5, projection=projection, margin=16)  # warm-up
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        gradient_rows(model, [seed], CLASSES, threshold=0.5, projection=projection, margin=16)
        build = time.perf_counter() - start
        example = training_example(model, int(seed), CLASSES, threshold=0.5)
        network = model.gradient_network
        start = time.perf_counter()
        for state in model.states:
            network.load_state_dict(state)
            for i in range(len(CLASSES)):
                logits = forward(network, example.image, card.spatial_dims, card.slice_axis)
                loss = region_loss(logits, example.targets[i : i + 1], card.activation)[0]
                torch.autograd.grad(loss, [p for p in network.parameters() if p.requires_grad], allow_unused=True)
        floor = time.perf_counter() - start
        rows.append({"seed": int(seed), "crop": list(example.image.shape[2:]), "build_seconds": build,
                     "floor_seconds": floor, "ratio": build / floor})
        log(f"buildcost: case {seed}, crop {rows[-1]['crop']}: build {build:.2f} s, floor {floor:.2f} s, "
            f"ratio {build / floor:.2f}")
    ratios = [r["ratio"] for r in rows]
    log(f"buildcost: {len(rows)} cases, {len(model.states)} checkpoints x {len(CLASSES)} classes, "
        f"{model.parameters} parameters (sketch {projection}): build / floor median {statistics.median(ratios):.2f}, "
        f"max {max(ratios):.2f} (target <= 1.3)")
    return {"rows": rows, "median_ratio": statistics.median(ratios), "max_ratio": max(ratios),
            "parameters": model.parameters, "projection": projection}


def _specificity_table(found: list, label: str) -> dict:
    """Pairwise overlap / Spearman and per-ranking faithfulness of one scoring's results (one per query)."""
    from itertools import combinations

    from napari_segxai.core.influence.features import similarity_check

    pairs, faith = [], []
    for a, name in enumerate(found[0].test_classes):
        for x, y in combinations(range(len(found)), 2):
            if found[x].test_voxels[a] == 0 or found[y].test_voxels[a] == 0:
                continue
            valid = (found[x].train_voxels > 0).ravel()
            sx, sy = found[x].scores[a].ravel()[valid], found[y].scores[a].ravel()[valid]
            pairs.append({"class": name, "queries": [found[x].case_name, found[y].case_name],
                          "top10_overlap": _top_overlap(sx, sy), "spearman": _spearman(sx, sy)})
    for result in found:
        for row in similarity_check(result, top=10):
            faith.append({"query": result.case_name, "class": row.test_class, "spearman_similarity": row.spearman,
                          "proponents": row.proponents, "opponents": row.opponents})
    overlap = np.array([p["top10_overlap"] for p in pairs])
    rho = np.array([p["spearman"] for p in pairs])
    summary = {
        "label": label, "pairs": len(pairs),
        "top10_overlap_mean": float(overlap.mean()), "top10_overlap_max": float(overlap.max()),
        "overlap_within_goal": float((overlap <= 0.3).mean()),
        "spearman_mean": float(rho.mean()), "spearman_max": float(rho.max()),
        "spearman_within_goal": float((rho <= 0.5).mean()),
        "similarity_spearman_mean": float(np.nanmean([f["spearman_similarity"] for f in faith])),
        "proponents_more_similar": int(sum(f["proponents"] > f["opponents"] for f in faith)),
        "class_queries": len(faith),
        "not_closer": [f"{f['query']} {f['class']}" for f in faith if f["proponents"] <= f["opponents"]],
    }
    return {"summary": summary, "pairs": pairs, "faithfulness": faith}


def _print_tables(tables: list, title: str) -> None:
    header = (f"{'':14s} {'pairs':>5s} {'overlap mean/max (<=0.3)':>26s} {'Spearman mean/max (<=0.5)':>27s} "
              f"{'score~similarity':>17s} {'proponents closer':>18s}")
    lines = [header]
    for table in tables:
        s = table["summary"]
        lines.append(f"{s['label']:14s} {s['pairs']:5d} {s['top10_overlap_mean']:7.2f} / {s['top10_overlap_max']:4.2f} "
                     f"({s['overlap_within_goal']:4.0%})   {s['spearman_mean']:7.2f} / {s['spearman_max']:4.2f} "
                     f"({s['spearman_within_goal']:4.0%})  {s['similarity_spearman_mean']:16.2f}  "
                     f"{s['proponents_more_similar']:>8d} of {s['class_queries']}"
                     + (f"  (not: {', '.join(s['not_closer'])})" if s["not_closer"] else ""))
    log(title + "\n" + "\n".join(lines))


def _queries_results(card, queries: list, scorings: dict) -> dict:
    """{label: [InfluenceResult per query]} for each label's scoring, one segmentation and gradient pass per query.

    ``scorings`` maps a label to (scoring, common modes or None)."""
    from napari_segxai.core.influence import scoring as scoring_module
    from napari_segxai.core.model.inference import segment

    model = load_tracin_model(card)
    results = {label: [] for label in scorings}
    for case in queries:
        seg = segment(case, card, network=model.network)
        for label, (scoring, modes) in scorings.items():
            default = scoring_module.COMMON_MODES     # each query reads the index again: its modes are recomputed
            scoring_module.COMMON_MODES = modes if modes is not None else default
            try:
                results[label].append(influence(case, card, model=model, segmentation=seg, scoring=scoring))
            finally:
                scoring_module.COMMON_MODES = default
        log(f"{case.name} ({len(results[next(iter(scorings))])}/{len(queries)})")
    return results


def stage_modes(card, args) -> dict:
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START
    from napari_segxai.core.training.synth import generate_case

    queries = [generate_case(HELD_OUT_SEED_START + 700 + 41 * i).case for i in range(args.modes_queries)]
    scorings = {"relative": ("relative", None)}
    scorings.update({f"specific r={r}": ("specific", r) for r in args.modes})
    results = _queries_results(card, queries, scorings)
    tables = [_specificity_table(found, label) for label, found in results.items()]
    _print_tables(tables, f"common modes, {len(queries)} tuning queries ({', '.join(q.name for q in queries)}):")
    return {"queries": [q.name for q in queries], "tables": tables}


def stage_specificity(card, args) -> dict:
    from napari_segxai.core.influence.scoring import SCORINGS
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START
    from napari_segxai.core.training.synth import generate_case

    queries = [demo_case()]
    queries += [generate_case(HELD_OUT_SEED_START + 300 + 37 * i).case for i in range(args.specificity_generated)]
    realdata = Path(__file__).resolve().parents[2] / "shared" / "realdata"
    queries += [load_case(folder) for folder in sorted(realdata.iterdir()) if folder.is_dir()] if realdata.is_dir() else []
    results = _queries_results(card, queries, {scoring: (scoring, None) for scoring in SCORINGS})
    tables = [_specificity_table(found, label) for label, found in results.items()]
    _print_tables(tables, f"specificity, {len(queries)} queries ({', '.join(q.name for q in queries)}); top-10 overlap "
                          "as a fraction of 10, pairs of different queries, same class; (share of pairs within the goal):")
    return {"queries": [q.name for q in queries], "tables": tables}


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
    parser.add_argument("--captum-cases", type=int, default=0,
                        help="training cases of the captum stage: the first N (default 0: all of them; fewer only for a smoke test)")
    parser.add_argument("--captum-queries", type=int, default=20,
                        help="query cases of the captum stage (the demo case first, then held-out generated cases)")
    parser.add_argument("--captum-parts", default=",".join(CAPTUM_PARTS),
                        help=f"parts of the captum stage this run may compute, of {', '.join(CAPTUM_PARTS)} (a part whose "
                             "result for the same settings is in --work is reused unless --fresh; the others must be there)")
    parser.add_argument("--fresh", action="store_true", help="rerun the chosen captum parts even when --work has their result")
    parser.add_argument("--fast-batch", type=int, default=0,
                        help="training batch size of TracInCPFast* (default 0: the whole training set in one batch)")
    parser.add_argument("--exact-cases", type=int, default=0,
                        help="training cases of the captum stage's exact all-parameter reference, drawn at random (seed 0) "
                             "(default 0: all); only the agreement columns use them")
    parser.add_argument("--jobs", type=int, default=1, help="captum parts run at a time, each in its own process")
    parser.add_argument("--captum-part", default=None, help=argparse.SUPPRESS)  # runs one part in a child process
    parser.add_argument("--subset", type=int, default=24, help="training cases of the Spearman and storage stages")
    parser.add_argument("--queries", type=int, default=2, help="query cases of the Spearman and storage stages (the demo case first)")
    parser.add_argument("--sizes", default="256,512,1024,2048,4096,8192", help="projection sizes of the Spearman stage")
    parser.add_argument("--last-ks", type=lambda text: [int(k) for k in text.split(",") if k], default=[],
                        help="also compare the last K layers (comma-separated K) with all-parameter TracIn in the Spearman stage")
    parser.add_argument("--check-tail", action="store_true", help="check once that the last layers' gradient is the tail of all")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--modes", type=lambda text: [int(k) for k in text.split(",") if k], default=[4, 8, 12, 16, 24, 32],
                        help="numbers of common modes tried by the modes stage (comma-separated)")
    parser.add_argument("--modes-queries", type=int, default=8, help="held-out generated query cases of the modes stage")
    parser.add_argument("--specificity-generated", type=int, default=6,
                        help="held-out generated query cases of the specificity stage (besides the demo and real cases)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    card = load_model_card(args.card)
    global CASE_PATH
    CASE_PATH = args.case
    if args.captum_part:
        run_captum_part(card, args)
        return 0
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
