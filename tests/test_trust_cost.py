"""The trust measures state their cost before the work, report progress every few perturbed inputs and stop within 2 s."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest

from _trust import unet_problem
from napari_segxai.core import progress as core_progress
from napari_segxai.core.trust import (
    QualitySettings, TrustSettings, assess_problem, deletion_curve, faithfulness_correlation, max_sensitivity,
)
from napari_segxai.core.trust.cost import check_cost
from test_attribution_cost import Slow


def test_each_measure_states_its_passes_and_the_check_keeps_the_estimate():
    problem = unet_problem()   # two explained classes
    settings = QualitySettings(n_subsets=6, deletion_steps=4, noise_samples=3)
    cost = check_cost(problem, ["saliency", "gradient_x_input"], metrics=("faithfulness", "deletion", "sensitivity"),
                      settings=settings, modes=("cascading",), max_steps=2)
    parts = {p.method: p for p in cost.parts}
    assert list(parts) == ["model parameter randomisation", "the maps measured", "faithfulness", "deletion",
                           "sensitivity"]
    # saliency and gradient x input: one forward and one backward pass per class each
    assert (parts["the maps measured"].forward, parts["the maps measured"].backward) == (2, 4)
    assert parts["model parameter randomisation"].forward == 2 * 3             # the trained network and 2 depths
    assert parts["faithfulness"].forward == 2 * (6 + 1) and parts["faithfulness"].backward == 0
    assert parts["deletion"].forward == (4 + 1) * (2 * 2 + 1)                  # per method and class, one random order
    assert (parts["sensitivity"].forward, parts["sensitivity"].backward) == (3 * 2, 3 * 4)
    assert cost.total.forward == sum(p.forward for p in cost.parts) and cost.seconds > 0
    assert "trust check of saliency, gradient_x_input" in cost.sentence() and "deletion" in cost.sentence()
    assert json.loads(json.dumps(cost.record()))["parts"][3]["forward_passes"] == 25

    told = []
    trust = assess_problem(problem, ["saliency"], settings=TrustSettings(max_steps=1, modes=("cascading",),
                                                                          n_subsets=2, deletion_steps=1,
                                                                          noise_samples=1),
                           before=told.append)
    assert told == [trust.cost] and trust.cost.total.forward > 0

    def decline(cost):
        raise core_progress.Cancelled("Not started.")

    measured = []
    with pytest.raises(core_progress.Cancelled):   # a declined estimate runs nothing
        assess_problem(problem, ["saliency"], before=decline, progress=lambda d, t: measured.append(d))
    assert set(measured) <= {0}


def _slow(problem, seconds):
    return dataclasses.replace(problem, network=Slow(problem.network, seconds))


@pytest.mark.parametrize("measure", ["faithfulness", "deletion"])
def test_perturbing_measures_report_progress_every_few_inputs(monkeypatch, measure):
    monkeypatch.setattr(core_progress, "PACE_SECONDS", 0.1)
    problem = _slow(unet_problem(), 0.01)
    seen = []
    record = lambda d, t: seen.append((d, t))   # noqa: E731
    if measure == "faithfulness":
        faithfulness_correlation(problem, np.ones((2, 2, 16, 16, 16)), n_subsets=120, progress=record)
    else:
        deletion_curve(problem, np.ones((2, 16, 16, 16)), 0, steps=119, progress=record)
    done = sorted({d for d, _ in seen})
    assert seen[-1] == (120, 120) and done[0] == 0
    assert max(np.diff(done)) <= 20   # 0.1 s of 0.01 s inputs, with room for a slow batch


@pytest.mark.parametrize("measure", ["faithfulness", "deletion", "sensitivity"])
def test_cancel_mid_measure_returns_within_two_seconds(measure):
    problem = _slow(unet_problem(), 0.05)
    relevance = np.ones((2, 2, 16, 16, 16))
    asked = threading.Event()
    threading.Timer(1.0, asked.set).start()
    start = time.perf_counter()
    with pytest.raises(core_progress.Cancelled):
        if measure == "faithfulness":
            faithfulness_correlation(problem, relevance, n_subsets=500, should_cancel=asked.is_set)
        elif measure == "deletion":
            deletion_curve(problem, relevance[0], 0, steps=500, should_cancel=asked.is_set)
        else:
            max_sensitivity(problem, "saliency", relevance, n_samples=200, should_cancel=asked.is_set)
    assert time.perf_counter() - start < 1.0 + 2.0
