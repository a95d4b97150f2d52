"""Cohort runs on toy generated cases: dask workers, resumability, a failed case, a killed worker, odd cases ranked first, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _cards import write_card
from napari_segxai.cli import build_parser, main
from napari_segxai.core.model.architectures import create_network
from napari_segxai.core.cohort import CohortSettings, analyse_cohort, run_cohort
from napari_segxai.core.cohort.runner import DONE
from napari_segxai.core.training.synth import generate_case
from napari_segxai.core.io.generated_cases import write_case
from napari_segxai.core.model.weights import save_state_dict

KWARGS = {"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0}
ODD = {"c03": "noise", "c07": "zeroed", "c10": "scaled"}   # FLAIR: noise, upper half of the slices zeroed, scaled x10


def _arrays(case):
    """The card's inputs (flair, t1) and its class indices (0 background, 1 edema, 2 core = necrosis + enhancing)."""
    target = np.zeros(case.shape, np.int64)
    target[case.label == 2] = 1
    target[(case.label == 1) | (case.label == 4)] = 2
    return np.stack([case.channel("flair"), case.channel("t1")]), target


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory) -> Path:
    """A tiny UNet with seeded random weights on the toy cases' own grid (for the runner's bookkeeping)."""
    return write_card(tmp_path_factory.mktemp("tiny-model"), preprocessing={"spacing": None},
                      inference={"roi_size": [32, 32, 32]})


@pytest.fixture(scope="module")
def toy_card(tmp_path_factory) -> Path:
    """A tiny UNet trained for 60 full-volume steps on twelve toy cases (about 20 s): it finds the oedema in FLAIR."""
    torch.manual_seed(0)
    network = create_network("UNet", KWARGS)
    pairs = [_arrays(generate_case(seed, size="toy").case) for seed in range(100, 112)]
    images = torch.tensor(np.stack([p[0] for p in pairs]))
    targets = torch.tensor(np.stack([p[1] for p in pairs]))
    optimizer = torch.optim.Adam(network.parameters(), 1e-2)
    weight = torch.tensor([0.2, 1.0, 1.0])
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(network(images), targets, weight=weight).backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("toy-model")
    save_state_dict(network.state_dict(), folder / "weights.safetensors")
    # the toy cases are z-scored in the brain already: no normalisation, so a scaled FLAIR reaches the network as is
    return write_card(folder, preprocessing={"spacing": None, "normalization": "none"},
                      inference={"roi_size": [32, 32, 32]})


def _odd(synth, kind):
    """The generated case with its FLAIR corrupted by noise, half missing (slices zeroed) or scaled."""
    case = synth.case
    channels = case.channels.copy()
    flair = case.modalities.index("flair")
    brain = np.any(channels != 0, axis=0)
    if kind == "noise":
        channels[flair][brain] = np.random.default_rng(0).standard_normal(int(brain.sum())).astype(np.float32)
    elif kind == "zeroed":
        channels[flair][..., channels.shape[-1] // 2:] = 0
    else:
        channels[flair] *= 10
    return dataclasses.replace(synth, case=dataclasses.replace(case, channels=channels))


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """Twelve toy cases c00..c11 (BraTS-style folders with a reference label), three of them odd (ODD)."""
    root = tmp_path_factory.mktemp("cohort") / "cases"
    for seed in range(12):
        name = f"c{seed:02d}"
        synth = generate_case(seed, size="toy")
        write_case(_odd(synth, ODD[name]) if name in ODD else synth, root / name)
    return root


def subset(cohort_dir: Path, folder: Path, names) -> Path:
    """A cases folder holding links to some cases of the cohort."""
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).symlink_to(cohort_dir / name, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def threads():
    """A dask client on one in-process worker thread, reachable over TCP (fast to start; process workers are tested below)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                           dashboard_address=":0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.mark.slow  # trains its toy model: 20-60 s on two busy cores
def test_odd_cases_rank_as_most_anomalous(toy_card, cohort_dir, threads, tmp_path):
    """The corrupted cases stand out. Generated cases vary (site, size, core type, contrast, thick slices), and the
    toy model fails on some ordinary ones too, which the forest rightly finds odd: so the noise case, the most
    corrupted, ranks first, and the corrupted cases score above the ordinary ones on average, not all three on top."""
    out = tmp_path / "out"
    run = run_cohort(cohort_dir, out, CohortSettings(str(toy_card)), client=threads)
    assert sorted(run.computed) == [f"c{i:02d}" for i in range(12)] and not run.failed
    report = analyse_cohort(out, run.cases, contamination=0.25, top=3)
    edema = report.anomalies["edema"]
    assert len(edema.cases) == 12
    assert edema.top(1)[0][0] == "c03"   # FLAIR replaced by noise
    odd = np.array([c in ODD for c in edema.cases])
    assert edema.scores[odd].mean() > edema.scores[~odd].mean() + 0.05, dict(zip(edema.cases, edema.scores))
    assert set(ODD) & {case for case, flagged in zip(edema.cases, edema.flagged) if flagged}
    typical = [d for c, d in zip(edema.cases, edema.dice) if c not in ODD and c != "c05"]
    assert np.mean(typical) > 0.3  # the toy model works on ordinary cases
    correlation = next(c for c in report.correlations if c.class_name == "edema")
    assert correlation.n == 12 and -1 <= correlation.rho <= 1 and 0 <= correlation.p_value <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert [c["case"] for c in summary["classes"]["edema"]["most_anomalous"]] == [c for c, _ in edema.top(3)]
    with open(out / "cohort_table.csv") as f:
        rows = list(csv.DictReader(f))
    edema_rows = [r for r in rows if r["class"] == "edema" and r["kind"] == "region"]
    assert {r["name"] for r in edema_rows} == {"edema", "core", "brain outside tumour", "background"}
    for case in {r["case"] for r in edema_rows}:  # the regions partition the grid: e_{b->a} add up to 1
        assert sum(float(r["importance"]) for r in edema_rows if r["case"] == case) == pytest.approx(1, abs=1e-4)


def test_resumable_only_missing_cases_are_recomputed(tiny_card, cohort_dir, threads, tmp_path):
    cases = subset(cohort_dir, tmp_path / "cases", ["c00", "c01", "c02"])
    out = tmp_path / "out"
    settings = CohortSettings(str(tiny_card))
    first = run_cohort(cases, out, settings, client=threads)
    assert sorted(first.computed) == ["c00", "c01", "c02"]
    stamps = {c: (out / "cases" / c / DONE).stat().st_mtime_ns for c in ("c00", "c02")}
    shutil.rmtree(out / "cases" / "c01")
    second = run_cohort(cases, out, settings, client=threads)
    assert second.computed == ("c01",) and sorted(second.reused) == ["c00", "c02"]
    assert {c: (out / "cases" / c / DONE).stat().st_mtime_ns for c in stamps} == stamps
    third = run_cohort(cases, out, settings)  # nothing left: no cluster is even started
    assert third.computed == () and len(third.reused) == 3
    # asking for maps recomputes the finished cases that lack them
    fourth = run_cohort(cases, out, dataclasses.replace(settings, maps=True), client=threads)
    assert len(fourth.computed) == 3
    assert {p.name for p in (out / "cases" / "c00").iterdir()} == {
        DONE, "roi.csv", "segmentation.nii.gz", "relevance_edema.nii.gz", "relevance_core.nii.gz"} - (
        set() if "core" in json.loads((out / "cases" / "c00" / DONE).read_text())["classes"] else {"relevance_core.nii.gz"})
    with pytest.raises(ValueError, match="another model or method"):
        run_cohort(cases, out, dataclasses.replace(settings, method="gradient_x_input"), client=threads)


def test_a_failed_case_is_recorded_and_the_rest_go_on(tiny_card, cohort_dir, threads, tmp_path):
    cases = subset(cohort_dir, tmp_path / "cases", ["c00", "c01"])
    broken = tmp_path / "cases" / "broken"
    shutil.copytree(cohort_dir / "c02", broken)
    flair = next(broken.glob("*_flair.nii.gz"))
    flair.write_bytes(flair.read_bytes()[:300])  # a truncated download
    out = tmp_path / "out"
    run = run_cohort(cases, out, CohortSettings(str(tiny_card)), client=threads)
    assert sorted(run.computed) == ["c00", "c01"]
    assert list(run.failed) == ["broken"]
    error = run.failed["broken"]
    assert "\n" not in error and flair.name in error
    report = analyse_cohort(out, run.cases)
    assert report.finished == ("c00", "c01") and report.failures == {"broken": error}
    with open(out / "failures.csv") as f:
        assert [r["case"] for r in csv.DictReader(f)] == ["broken"]
    # once the file is repaired, only the broken case is computed
    shutil.rmtree(broken)
    shutil.copytree(cohort_dir / "c02", broken)
    again = run_cohort(cases, out, CohortSettings(str(tiny_card)), client=threads)
    assert again.computed == ("broken",) and not again.failed
    assert not (out / "cases" / "broken" / "failed.json").exists()


def test_killing_a_worker_mid_run_loses_no_case_and_duplicates_none(tiny_card, cohort_dir, tmp_path):
    """The issue's test: the default LocalCluster, two worker processes on loopback, one killed once the first case is done."""
    from distributed import default_client

    names = [f"c{i:02d}" for i in range(6)]
    cases = subset(cohort_dir, tmp_path / "cases", names)
    out = tmp_path / "out"
    killed: list[tuple[str, list]] = []  # (worker address, the keys it was working on)

    def kill_a_busy_worker(done, total):
        if killed or done < 1:
            return
        client = default_client()  # the client run_cohort made for its own cluster
        busy = [(w, tasks) for w, tasks in client.processing().items() if tasks]
        assert busy, "every case was done before a worker could be killed"
        killed.append((busy[0][0], list(busy[0][1])))
        client.run(os._exit, 1, workers=[busy[0][0]], on_error="ignore")

    # on the CPU: a CUDA context alone would take a worker past the memory limit (its nanny kills it); the limit
    # stays well above an idle worker (torch + MONAI: about 1.3 GB), which dask pauses at 80% of it
    run = run_cohort(cases, out, CohortSettings(str(tiny_card), device="cpu"), workers=2, memory_limit="3GiB",
                     progress=kill_a_busy_worker)
    assert killed and killed[0][1], "no worker was killed while it worked on a case"
    assert run.workers == 2 and not run.failed
    assert sorted(run.computed + run.reused) == names  # each case reported once
    report = analyse_cohort(out, run.cases)
    keys = [(r["case"], r["class"], r["kind"], r["name"]) for r in report.table]
    assert len(keys) == len(set(keys))  # no case twice
    assert set(report.finished) == set(names)  # every case in the table


def test_cli_cohort_end_to_end(tiny_card, cohort_dir, threads, tmp_path, capsys):
    """segxai cohort on a running cluster (--scheduler), with metadata; run twice: the second computes nothing."""
    cases = subset(cohort_dir, tmp_path / "cases", ["c00", "c03", "c04", "c06"])
    meta = tmp_path / "meta.csv"
    meta.write_text("case,site\nc00,A\nc03,B\nc04,A\nc06,A\n")
    out = tmp_path / "out"
    argv = ["cohort", str(cases), "--model", str(tiny_card), "--method", "saliency", "--out", str(out),
            "--scheduler", threads.scheduler.address, "--metadata", str(meta), "--contamination", "0.25", "--top", "2", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 case(s)" in printed and "4 computed on scheduler" in printed and "class edema" in printed
    for name in ("cohort_table.csv", "global_importance.csv", "global_importance.png", "anomalies.csv",
                 "dice_correlation.csv", "subgroups.csv", "failures.csv", "summary.json"):
        assert (out / name).is_file(), name
    with open(out / "subgroups.csv") as f:
        groups = {(r["column"], r["value"]): r for r in csv.DictReader(f)}
    assert groups[("site", "B")]["cases"] == "1" and groups[("site", "A")]["cases"] == "3"
    assert main(argv) == 0  # resumed: nothing to compute
    assert "0 computed" in capsys.readouterr().out


def test_cli_user_errors_are_one_sentence(tiny_card, cohort_dir, tmp_path, capsys):
    base = ["cohort", str(cohort_dir), "--model", str(tiny_card), "--out", str(tmp_path / "out")]
    for extra, words in [(["--workers", "0"], "--workers must be 1 or more"),
                         (["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "leave it out with --scheduler"),
                         (["--contamination", "0.9"], "--contamination must be in"),
                         (["--method", "saliency", "--param", "steps=3"], "saliency has no parameter"),
                         (["--metadata", str(tmp_path / "nope.csv")], "does not exist")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert main(["cohort", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_help_documents_every_option():
    parser = build_parser()
    command = parser._subparsers._group_actions[0].choices["cohort"]
    for action in command._actions:
        assert action.help, action.dest
    text = command.format_help()
    for option in ("--model", "--method", "--out", "--scheduler", "--workers", "--maps", "--metadata", "--device"):
        assert option in text
