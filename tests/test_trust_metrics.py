"""Quality metrics on models whose answers are known: faithfulness, deletion, max-sensitivity, complexity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _trust import linear_problem, unet_problem
from napari_segxai.core.progress import Cancelled
from napari_segxai.core.trust import quality as quality_module
from napari_segxai.core.trust.plots import deletion_plot
from napari_segxai.core.trust.quality import Column, QualityMetric, QualitySettings, register_metric
from napari_segxai.core.trust import (
    complexity, deletion_curve, faithfulness_correlation, max_sensitivity, quality_metrics, relevance_of,
)

W = np.array([1.5, 0.5])   # class 1's weights in linear_problem


def test_gradient_x_input_of_a_linear_model_is_perfectly_faithful():
    problem = linear_problem()
    relevance, _ = relevance_of(problem, "gradient_x_input")
    r = faithfulness_correlation(problem, relevance, subset=0.1, n_subsets=24, seed=1)
    assert r.shape == (1,) and r[0] == pytest.approx(1.0, abs=1e-6)
    flat, _ = relevance_of(problem, "saliency")          # the same everywhere in the region: ignores the input
    assert faithfulness_correlation(problem, flat, subset=0.1, n_subsets=24, seed=1)[0] < 0.99
    shuffled = np.random.default_rng(0).permutation(relevance.ravel()).reshape(relevance.shape)
    assert abs(faithfulness_correlation(problem, shuffled, subset=0.1, n_subsets=24, seed=1)[0]) < 0.6


def test_deletion_curve_of_a_linear_model_is_the_sum_of_what_is_left():
    problem = linear_problem(shape=(8, 8, 8))
    relevance, _ = relevance_of(problem, "gradient_x_input")
    curve = deletion_curve(problem, relevance[0], 0, steps=8)
    x = problem.inputs[0].double().numpy()
    contributions = (W[:, None, None, None] * x).sum(0) * problem.target.masks[0]
    ordered = np.sort(contributions.ravel())[::-1]
    expected = contributions.sum() - np.concatenate([[0.0], np.cumsum(ordered)])[np.arange(9) * 64]
    np.testing.assert_allclose(curve.scores, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(curve.fractions, np.arange(9) / 8)
    assert curve.normalised[0] == pytest.approx(1.0) and curve.normalised[-1] == pytest.approx(0.0)
    random = deletion_curve(problem, relevance[0], 0, steps=8, order="random")
    assert curve.auc < random.auc - 0.2                    # the relevant voxels carry the output


def test_max_sensitivity_is_zero_for_a_constant_gradient_and_bounded_for_gradient_x_input():
    problem = linear_problem(shape=(8, 8, 8))
    saliency, _ = relevance_of(problem, "saliency")
    assert max_sensitivity(problem, "saliency", saliency, n_samples=3)[0] == pytest.approx(0.0, abs=1e-7)
    relevance, _ = relevance_of(problem, "gradient_x_input")
    radius = 0.05
    value = max_sensitivity(problem, "gradient_x_input", relevance, n_samples=3, radius=radius)[0]
    x = problem.inputs[0].double().numpy()
    std = x.reshape(2, -1).std(1)
    region = problem.target.masks[0]
    bound = np.sqrt(region.sum() * ((W * radius * std) ** 2).sum()) / np.linalg.norm(relevance)
    assert 0 < value <= bound


def test_complexity_of_constant_and_single_voxel_maps():
    constant = np.ones((1, 2, 6, 6, 6))
    point = np.zeros((1, 2, 6, 6, 6))
    point[0, 1, 2, 3, 4] = -7.0
    above, entropy, normalised = complexity(np.concatenate([constant, point]), threshold=0.1)
    np.testing.assert_allclose(above, [1.0, 1 / 216])
    np.testing.assert_allclose(entropy, [np.log(216), 0.0], atol=1e-12)
    np.testing.assert_allclose(normalised, [1.0, 0.0], atol=1e-12)
    half = np.zeros((1, 1, 4, 4, 4))
    half[..., :2] = 1.0
    half[..., 2:] = 0.05                                     # below 10% of the maximum
    above, entropy, _ = complexity(half, threshold=0.1)
    assert above[0] == pytest.approx(0.5)


def test_quality_metrics_rows_curves_progress_and_cancel(tmp_path):
    problem = unet_problem()
    seen = []
    result = quality_metrics(problem, ["saliency", "gradient_x_input"],
                             settings=QualitySettings(n_subsets=8, deletion_steps=4, noise_samples=2), progress=lambda d, t: seen.append((d, t)))
    assert [(r.method, r.class_name) for r in result.rows] == [
        ("saliency", "one"), ("saliency", "two"), ("gradient_x_input", "one"), ("gradient_x_input", "two")]
    for row in result.rows:
        assert -1 <= row.faithfulness <= 1 and np.isfinite(row.deletion_auc) and row.max_sensitivity >= 0
        assert 0 < row.above_threshold <= 1 and 0 < row.entropy_normalised <= 1
        assert row.seconds_explain > 0 and row.seconds_deletion > 0
    assert len(result.curves) == 2 * 2 + 2                   # per method and class, and one random order per class
    assert seen[-1] == (1000, 1000) and all(0 <= d <= t for d, t in seen)
    assert result.to_csv(tmp_path / "metrics.csv").read_text().startswith("method,class_name,faithfulness")
    assert deletion_plot(result, tmp_path / "deletion.png").read_bytes()[:4] == b"\x89PNG"
    only = quality_metrics(problem, ["saliency"], metrics=("complexity",))
    assert np.isnan(only.rows[0].faithfulness) and np.isfinite(only.rows[0].entropy)
    with pytest.raises(Cancelled):
        quality_metrics(problem, ["saliency"], should_cancel=lambda: True)
    with pytest.raises(ValueError, match="metric"):
        quality_metrics(problem, ["saliency"], metrics=("beauty",))


def test_inputs_and_network_are_left_untouched():
    problem = unet_problem()
    before = problem.inputs.clone()
    weights = {k: v.clone() for k, v in problem.network.state_dict().items()}
    quality_metrics(problem, ["saliency"], settings=QualitySettings(n_subsets=4, deletion_steps=2, noise_samples=1))
    assert torch.equal(problem.inputs, before)
    assert all(torch.equal(v, weights[k]) for k, v in problem.network.state_dict().items())


def test_the_registry_holds_the_built_in_metrics_and_drives_rows_and_tables(monkeypatch):
    from napari_segxai.core.trust import available_metrics, case_measures, metric_class

    assert available_metrics() == ("faithfulness", "deletion", "sensitivity", "complexity")
    assert all(metric_class(name).name == name for name in available_metrics())
    monkeypatch.setattr(quality_module, "_METRICS", dict(quality_module._METRICS))   # undone after the test

    @register_metric
    class Peak(QualityMetric):
        """A toy metric: the largest |relevance| of each class."""

        name = "peak"
        columns = (Column("peak", "Peak", "largest |relevance|"),)

        def measure(self, context, progress):
            return {"peak": np.abs(context.relevance).reshape(len(context.relevance), -1).max(1)}

    with pytest.raises(ValueError, match="unique name"):
        register_metric(Peak)
    assert "peak" in case_measures()
    result = quality_metrics(unet_problem(), ["saliency"], metrics=("peak", "complexity"))
    assert all(row.peak > 0 and row.seconds_peak >= 0 and np.isnan(row.faithfulness) for row in result.rows)
