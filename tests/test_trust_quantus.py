"""Our metrics against Quantus (the field's reference) on 2D toy cases where both apply; skipped without Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segxai.core.attribution import region_target
from napari_segxai.core.trust import Problem, complexity, deletion_curve, faithfulness_correlation, max_sensitivity, relevance_of

quantus = pytest.importorskip("quantus")

SIDE = 16


class Scalars(torch.nn.Module):
    """A segmentation problem seen as a classifier: its explained scalars (B, K_t) are the class scores."""

    def __init__(self, problem: Problem):
        super().__init__()
        self.network = problem.network
        self.target = problem.target
        self.eval()

    def forward(self, x):
        return self.target.scalars(self.network(x))


class Squares(torch.nn.Module):
    """Two classes: background 0, lesion logit = 2 x^2 at each pixel (a known, non-linear map)."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 2 * x**2], dim=1)


def toy_problem(network) -> Problem:
    """A 16x16 one-channel image, standardised, explaining class 1 summed over a square region."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1, 1, SIDE, SIDE))
    x = (x - x.mean()) / x.std()
    region = np.zeros((SIDE, SIDE), bool)
    region[4:12, 3:11] = True
    return Problem(network.eval(), torch.tensor(x, dtype=torch.float32), region_target(region, [1], 2), ("lesion",), ("image",))


def conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1))


def test_faithfulness_correlation_equals_quantus_for_the_same_subsets():
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    problem = toy_problem(conv_net())
    relevance, _ = relevance_of(problem, "gradient_x_input")
    subsets = []

    def recording(arr, indices, **kwargs):   # Quantus's own perturbation, remembering its random subsets
        subsets.append(np.array(indices[0]))
        return batch_baseline_replacement_by_indices(arr, indices, **kwargs)

    np.random.seed(7)
    metric = quantus.FaithfulnessCorrelation(nr_runs=30, subset_size=40, abs=False, normalise=False,
                                             perturb_func=recording, perturb_baseline="black",
                                             return_aggregate=False, disable_warnings=True)
    theirs = metric(model=Scalars(problem), x_batch=problem.inputs.numpy(), y_batch=np.array([0]),
                    a_batch=relevance[:, 0:1], device="cpu", softmax=False)[0]
    assert len(subsets) == 30
    ours = faithfulness_correlation(problem, relevance, subsets=subsets, baseline="minimum")[0]
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_deletion_curve_equals_quantus_pixel_flipping():
    problem = toy_problem(conv_net())
    relevance, _ = relevance_of(problem, "integrated_gradients")
    ours = deletion_curve(problem, relevance[0], 0, steps=16, baseline="minimum")
    metric = quantus.PixelFlipping(features_in_step=16, abs=False, normalise=False, perturb_baseline="black",
                                   disable_warnings=True)
    theirs = metric(model=Scalars(problem), x_batch=problem.inputs.numpy(), y_batch=np.array([0]),
                    a_batch=relevance[:, 0:1], device="cpu", softmax=False)[0]
    np.testing.assert_allclose(ours.scores[1:], theirs, rtol=1e-5, atol=1e-4)


def test_entropy_equals_quantus_complexity():
    maps = np.random.default_rng(1).normal(size=(3, 1, SIDE, SIDE))
    _, entropy, _ = complexity(maps)
    metric = quantus.Complexity(abs=True, normalise=False, disable_warnings=True)
    problem = toy_problem(conv_net())
    theirs = metric(model=Scalars(problem), x_batch=np.repeat(problem.inputs.numpy(), 3, 0), y_batch=np.zeros(3, int),
                    a_batch=maps.copy(), device="cpu", softmax=False)
    np.testing.assert_allclose(entropy, theirs, rtol=1e-7)


def test_max_sensitivity_agrees_with_quantus_on_a_known_map():
    problem = toy_problem(Squares())

    def explain_func(model, inputs, targets, **kwargs):
        return relevance_of(problem, "gradient_x_input", inputs=torch.as_tensor(inputs, dtype=torch.float32))[0][:, 0:1]

    relevance = explain_func(None, problem.inputs.numpy(), None)
    radius = 0.2
    ours = max_sensitivity(problem, "gradient_x_input", relevance, n_samples=60, radius=radius, seed=2)[0]
    np.random.seed(2)
    metric = quantus.MaxSensitivity(nr_samples=60, lower_bound=radius, normalise=False, abs=False, disable_warnings=True)
    theirs = metric(model=Scalars(problem), x_batch=problem.inputs.numpy(), y_batch=np.array([0]),
                    a_batch=relevance, explain_func=explain_func, device="cpu", softmax=False)[0]
    assert ours == pytest.approx(theirs, rel=0.1)   # the same noise law, different draws
