"""Model parameter randomisation: seeded copies, forward layer order, and a check that flags a weight-blind method."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from _trust import InputItself, SobelOfInput, unet_problem
from napari_segxai.core.progress import Cancelled
from napari_segxai.core.trust import randomisation_test, randomised_copy, weight_layers
from napari_segxai.core.trust.plots import randomisation_plot
from napari_segxai.core.trust.randomisation import depths


class Backwards(torch.nn.Module):
    """Layers registered in one order and run in the reverse order."""

    def __init__(self):
        super().__init__()
        self.last = torch.nn.Conv3d(3, 2, 1)
        self.middle = torch.nn.Conv3d(3, 3, 1)
        self.first = torch.nn.Conv3d(1, 3, 1)
        self.act = torch.nn.PReLU()

    def forward(self, x):
        return self.last(self.act(self.middle(self.first(x))))


def test_weight_layers_follow_the_forward_pass():
    assert weight_layers(Backwards(), torch.zeros(1, 1, 4, 4, 4)) == ("first", "middle", "last")


def test_randomised_copy_is_seeded_and_never_touches_the_network():
    net = Backwards()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layers = weight_layers(net, torch.zeros(1, 1, 4, 4, 4))
    state = torch.random.get_rng_state()
    copy_a = randomised_copy(net, layers, ["last", "middle"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)   # the caller's random stream is left alone
    copy_b = randomised_copy(net, layers, ["last", "middle"], seed=3)
    copy_c = randomised_copy(net, layers, ["last", "middle"], seed=4)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert torch.equal(copy_a.last.weight, copy_b.last.weight)
    assert not torch.equal(copy_a.last.weight, copy_c.last.weight)
    assert not torch.equal(copy_a.middle.weight, net.middle.weight)
    assert torch.equal(copy_a.first.weight, net.first.weight)          # not named: kept
    alone = randomised_copy(net, layers, ["middle"], seed=3)           # the same layer, the same new weights
    assert torch.equal(alone.middle.weight, copy_a.middle.weight)


def test_depths_are_thinned_but_always_reach_every_layer():
    assert depths(5, None) == [1, 2, 3, 4, 5]
    assert depths(40, 4) == [1, 14, 27, 40]
    assert depths(40, 1) == [40]
    with pytest.raises(ValueError):
        depths(5, 0)


def test_cascading_randomisation_changes_gradients_but_not_an_edge_filter_or_the_input(tmp_path):
    problem = unet_problem()
    result = randomisation_test(problem, ["saliency", SobelOfInput(), InputItself()], modes=("cascading",), seed=1)
    n_layers = len(result.layers)
    cascade = [r for r in result.rows if r.mode == "cascading"]
    assert {r.depth for r in cascade} == set(range(1, n_layers + 1))
    blind = [r for r in cascade if r.method in ("sobel_of_input", "input_itself")]
    assert len(blind) == 2 * 2 * n_layers
    assert all(r.spearman == pytest.approx(1.0) and r.ssim == pytest.approx(1.0) and r.top_k == 1.0 for r in blind)
    deepest = [r for r in cascade if r.method == "saliency" and r.depth == n_layers]
    assert all(r.spearman < 0.5 and r.ssim < 0.5 for r in deepest)
    verdicts = {(v.method, v.class_name): v.passes for v in result.verdicts()}
    assert verdicts == {("saliency", "one"): True, ("saliency", "two"): True,
                        ("sobel_of_input", "one"): False, ("sobel_of_input", "two"): False,
                        ("input_itself", "one"): False, ("input_itself", "two"): False}
    original = [r for r in result.rows if r.mode == "none"]
    assert len(original) == 6 and all(r.spearman == pytest.approx(1.0) for r in original)

    table = result.to_csv(tmp_path / "sanity.csv")
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result.rows) and rows[0]["method"] == "saliency"
    picture = randomisation_plot(result, tmp_path / "sanity.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_independent_randomisation_of_one_layer_at_a_time():
    problem = unet_problem()
    result = randomisation_test(problem, ["saliency"], modes=("independent",), max_steps=3)
    rows = [r for r in result.rows if r.mode == "independent"]
    assert len(rows) == 3 * 2
    assert {r.layer for r in rows} <= set(result.layers)
    assert all(np.isfinite(r.spearman) and r.spearman < 0.999 for r in rows)


def test_progress_and_cancel():
    problem = unet_problem()
    seen = []
    randomisation_test(problem, ["saliency"], modes=("cascading",), max_steps=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 3
    with pytest.raises(Cancelled):
        randomisation_test(problem, ["saliency"], max_steps=2, should_cancel=lambda: True)
    with pytest.raises(ValueError, match="mode"):
        randomisation_test(problem, ["saliency"], modes=("sideways",))


def test_new_weights_come_from_the_cpu_generator_whatever_the_device():
    import copy

    net = Backwards()
    layers = weight_layers(net, torch.zeros(1, 1, 4, 4, 4))
    model = randomised_copy(net, layers, ["middle"], seed=2)
    expected = copy.deepcopy(net.middle)
    torch.manual_seed(2 * 100_003 + layers.index("middle"))
    expected.reset_parameters()
    assert torch.equal(model.middle.weight, expected.weight) and torch.equal(model.middle.bias, expected.bias)
    if torch.cuda.is_available():
        on_gpu = randomised_copy(net.cuda(), layers, ["middle"], seed=2)
        assert torch.equal(on_gpu.middle.weight.cpu(), expected.weight)
