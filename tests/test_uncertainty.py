"""Where the model is unsure: entropy and mutual information of checkpoint, flip and MC dropout ensembles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _influence import blob_case, toy_model
from napari_segxai.core.model.inference import segment
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.uncertainty import (
    Uncertainty,
    entropy_and_mutual_information,
    segment_with_uncertainty,
    uncertain_region,
    uncertainty,
)
from napari_segxai.core.progress import Cancelled

LN2, LN3 = math.log(2.0), math.log(3.0)


@pytest.fixture(scope="module")
def toy_card(tmp_path_factory):
    """A tiny UNet card (4 modalities, 4 classes, one 16^3 window, no resampling) with three recorded checkpoints."""
    return load_model_card(toy_model(tmp_path_factory.mktemp("toy") / "model"))


class Pointwise(torch.nn.Module):
    """A 1x1x1 convolution: it commutes with every flip, so a flip ensemble agrees exactly."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv3d(4, 4, 1)
        self.drop = torch.nn.Dropout3d(dropout) if dropout else torch.nn.Identity()

    def forward(self, x):
        return self.conv(self.drop(x))


def test_entropy_and_mutual_information_match_hand_computed_values():
    # three voxels of two members, three classes: they disagree with certainty, agree on uniform, agree on certain
    first = np.array([[1.0, 1 / 3, 1.0], [0.0, 1 / 3, 0.0], [0.0, 1 / 3, 0.0]])
    second = np.array([[0.0, 1 / 3, 1.0], [1.0, 1 / 3, 0.0], [0.0, 1 / 3, 0.0]])
    entropy, mutual = entropy_and_mutual_information([first, second])
    np.testing.assert_allclose(entropy, [LN2, LN3, 0.0], atol=1e-6)
    np.testing.assert_allclose(mutual, [LN2, 0.0, 0.0], atol=1e-6)
    # a skewed pair: mean (0.7, 0.3); each member's entropy by hand
    p, q = np.array([[0.9], [0.1]]), np.array([[0.5], [0.5]])
    h = lambda v: -sum(x * math.log(x) for x in v)  # noqa: E731
    entropy, mutual = entropy_and_mutual_information([p, q])
    assert entropy[0] == pytest.approx(h([0.7, 0.3]), abs=1e-6)
    assert mutual[0] == pytest.approx(h([0.7, 0.3]) - (h([0.9, 0.1]) + h([0.5, 0.5])) / 2, abs=1e-6)
    # sigmoid classes: the sum of binary entropies
    entropy, mutual = entropy_and_mutual_information([np.array([[1.0], [0.5]]), np.array([[0.0], [0.5]])], "sigmoid")
    np.testing.assert_allclose(entropy, [2 * LN2], atol=1e-6)
    np.testing.assert_allclose(mutual, [LN2], atol=1e-6)


def test_flips_of_a_flip_equivariant_network_agree_exactly(toy_card):
    case = blob_case()
    measured = uncertainty(case, toy_card, "flips", network=Pointwise(), device="cpu")
    assert measured.members == ("no flip", "flip x", "flip y", "flip z", "flip x+y", "flip x+z", "flip y+z",
                                "flip x+y+z")
    assert measured.entropy.shape == case.shape and measured.entropy.dtype == np.float32
    assert measured.entropy.max() > 0.1
    assert np.abs(measured.mutual_information).max() < 1e-5
    np.testing.assert_allclose(measured.affine, case.affine)
    assert measured.max_entropy == pytest.approx(math.log(4))


def test_flips_of_the_toy_unet_disagree_and_keep_the_plain_segmentation(toy_card):
    case = blob_case()
    seg, measured = segment_with_uncertainty(case, toy_card, "flips", device="cpu")
    np.testing.assert_array_equal(seg.labels, segment(case, toy_card, device="cpu").labels)
    assert measured.mutual_information.max() > 1e-4
    assert np.all(measured.mutual_information <= measured.entropy + 1e-6)
    assert np.all(measured.entropy <= measured.max_entropy + 1e-5)


def test_dropout_is_refused_for_a_network_without_dropout(toy_card):
    with pytest.raises(ValueError, match=r"no dropout layer with p > 0.*choose flips") as err:
        uncertainty(blob_case(), toy_card, "dropout", device="cpu")
    assert str(err.value).count(".") <= 3 and "\n" not in str(err.value)


def test_mc_dropout_samples_disagree_repeatably_and_leave_the_network_in_eval_mode(toy_card):
    network = Pointwise(dropout=0.5).eval()
    state = torch.random.get_rng_state()
    first = uncertainty(blob_case(), toy_card, "dropout", network=network, samples=4, seed=3, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)
    again = uncertainty(blob_case(), toy_card, "dropout", network=network, samples=4, seed=3, device="cpu")
    assert first.members == tuple(f"dropout sample {i}" for i in range(1, 5))
    assert first.mutual_information.max() > 1e-3
    np.testing.assert_array_equal(first.entropy, again.entropy)
    assert not any(m.training for m in network.modules())
    with pytest.raises(ValueError, match="at least 2 samples"):
        uncertainty(blob_case(), toy_card, "dropout", network=network, samples=1, device="cpu")


def test_the_recorded_checkpoints_make_an_ensemble(toy_card):
    values = []
    measured = uncertainty(blob_case(), toy_card, "checkpoints", device="cpu", progress=lambda d, t: values.append((d, t)))
    assert measured.members == ("checkpoint step 10", "checkpoint step 20", "checkpoint step 30")
    assert measured.mutual_information.max() > 1e-4
    totals = {t for _, t in values}
    assert len(totals) == 1 and values[-1][0] == values[-1][1]
    assert [d for d, _ in values] == sorted(d for d, _ in values)


def test_a_model_without_recorded_checkpoints_says_so(tmp_path):
    card = load_model_card(toy_model(tmp_path / "bare", training=False))
    with pytest.raises(ValueError, match="no recorded training checkpoints.*choose flips or dropout"):
        uncertainty(blob_case(), card, "checkpoints", device="cpu")
    with pytest.raises(ValueError, match="Unknown uncertainty mode 'bagging'"):
        uncertainty(blob_case(), card, "bagging", device="cpu")


def test_cancel_stops_the_ensemble(toy_card):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        uncertainty(blob_case(), toy_card, "flips", device="cpu", should_cancel=should_cancel)


def test_the_uncertain_region_is_the_voxels_above_the_threshold():
    entropy = np.array([[[0.1, 0.6], [0.9, 0.2]]], np.float32)
    measured = Uncertainty(entropy, entropy / 2, "flips", ("a", "b"), np.eye(4), math.log(4), "cpu", 0.1)
    np.testing.assert_array_equal(uncertain_region(measured, 0.5), entropy > 0.5)
    with pytest.raises(ValueError, match=r"No voxel has an entropy above 1 nats \(the highest is 0.900\); lower"):
        uncertain_region(measured, 1.0)
    with pytest.raises(ValueError, match=r"must be in \[0, 1.386\)"):
        uncertain_region(measured, 2.0)
