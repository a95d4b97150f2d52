"""Ground-truth benchmark and case problems: precision against known lesions, modality shares, edge baselines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _cards import write_card
from _trust import linear_problem
from napari_segxai.core.case import Case
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.trust import case_problem, relevance_of
from napari_segxai.core.trust.groundtruth import (
    EDGES, RANDOM, TRAINED, edge_relevance, explanation_precision, ground_truth_benchmark, modality_shares,
)

CUBE = (slice(6, 12), slice(5, 11), slice(4, 10))


class FlairLesionNet(torch.nn.Module):
    """Inputs (flair, t1): background logit 2 - 4 flair, edema logit 4 flair - 2, core logit 4 t1 - 6."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]).view(3, 2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([2.0, -2.0, -6.0]))

    def forward(self, x):
        return self.conv(x)


def flair_case(shape=(20, 18, 16)) -> Case:
    """A case (t1, flair) whose edema (label 2) is a bright FLAIR cube; t1 is faint noise."""
    rng = np.random.default_rng(0)
    flair = np.zeros(shape, np.float32)
    flair[CUBE] = 1.0
    t1 = rng.uniform(0, 0.5, shape).astype(np.float32)
    label = np.zeros(shape, np.int16)
    label[CUBE] = 2
    return Case(np.stack([t1, flair]), ("t1", "flair"), np.diag([2.0, 2.0, 2.0, 1.0]), label=label, name="cube")


def flair_card(tmp_path):
    return load_model_card(write_card(tmp_path / "card", kwargs={"spatial_dims": 3, "in_channels": 2, "out_channels": 3,
                                                                 "channels": [4, 8], "strides": [2]},
                                      preprocessing={"normalization": "none"}, inference={"roi_size": [8, 8, 8]}))


def test_case_problem_crops_the_predicted_region_with_its_label(tmp_path):
    case = flair_case()
    before = case.channels.copy()
    problem = case_problem(case, flair_card(tmp_path), classes=["edema"], network=FlairLesionNet(), margin=2, device="cpu")
    assert problem.spatial_shape == (16, 16, 16) and problem.channel_names == ("flair", "t1")
    assert problem.class_names == ("edema",) and problem.class_labels == (2,)
    assert problem.target.masks[0].sum() == 6 * 6 * 6
    np.testing.assert_array_equal(problem.lesion(0), problem.target.masks[0])
    flair_in_crop = problem.inputs[0, 0].numpy()
    np.testing.assert_array_equal(flair_in_crop > 0.5, problem.target.masks[0])
    np.testing.assert_array_equal(case.channels, before)


def test_case_problem_crops_around_a_painted_region_or_one_voxel(tmp_path):
    case, card = flair_case(), flair_card(tmp_path)
    region = np.zeros(case.shape, bool)
    region[2:4, 3:5, 10:13] = True      # outside the lesion: what the user painted, not what was predicted
    problem = case_problem(case, card, classes=["edema", "core"], network=FlairLesionNet(), margin=1,
                           target="region", region=region, device="cpu")
    assert problem.target.kind == "region" and problem.target.voxel_counts == (12, 12)
    assert problem.spatial_shape == (8, 8, 8)   # at least one window
    np.testing.assert_array_equal(problem.target.masks[0], problem.target.masks[1])
    point = case_problem(case, card, classes=["edema"], network=FlairLesionNet(), margin=1, target="voxel",
                         voxel=(8, 7, 6), device="cpu")
    assert point.target.kind == "voxel" and point.target.voxel_counts == (1,)
    (inside,) = np.argwhere(point.target.masks[0])
    assert point.inputs[0, 0][tuple(inside)] == 1.0        # the voxel (8, 7, 6) is in the bright FLAIR cube
    with pytest.raises(ValueError, match="outside the case"):
        case_problem(case, card, network=FlairLesionNet(), target="voxel", voxel=(99, 0, 0), device="cpu")


def test_precision_of_a_perfect_map_is_one_and_of_its_complement_zero():
    region = np.zeros((8, 8, 8), bool)
    region[2:5, 1:6, 3:7] = True
    perfect = np.stack([region * 1.0, region * 0.5])
    assert explanation_precision(perfect, region) == 1.0
    assert explanation_precision(np.stack([~region * 1.0]), region) == 0.0
    partial = np.zeros((1, 8, 8, 8))
    partial[0, 2:5, 1:6, 3:5] = 2.0              # half the lesion (30 voxels) first
    partial[0, 0, 0, :] = 1.0                    # then 8 voxels outside it
    partial[0, 2:5, 1:6, 5:7] = 0.1              # then the other half; k = 60 takes 22 of them
    assert explanation_precision(partial, region) == pytest.approx((30 + 22) / 60)
    assert np.isnan(explanation_precision(perfect, np.zeros_like(region)))


def test_modality_shares_and_edge_filters():
    relevance = np.zeros((3, 4, 4, 4))
    relevance[0] = 1.0
    relevance[2] = -3.0
    np.testing.assert_allclose(modality_shares(relevance), [0.25, 0.0, 0.75])
    x = torch.zeros(1, 1, 9, 9, 9)
    x[0, 0, 3:6, 3:6, 3:6] = 1.0
    for kind in ("sobel", "laplace"):
        edges = edge_relevance(x, kind)
        assert edges.shape == (1, 9, 9, 9) and edges[0, 4, 4, 4] == 0.0 and edges[0, 3, 4, 4] > 0
    with pytest.raises(ValueError, match="edge filter"):
        edge_relevance(x, "canny")


def test_benchmark_on_a_case_whose_answer_is_known(tmp_path):
    problem = case_problem(flair_case(), flair_card(tmp_path), classes=["edema"], network=FlairLesionNet(), margin=2,
                           device="cpu")
    signature = {"edema": {"t1": 0.1, "flair": 3.0}}
    result = ground_truth_benchmark(problem, ["gradient_x_input", "saliency"], signature=signature, carrier="healthy",
                                    seed=0)
    precision = {(r.method, r.model): r.precision for r in result.precision}
    assert precision[("gradient_x_input", TRAINED)] == 1.0 and precision[("saliency", TRAINED)] == 1.0
    assert precision[("sobel", EDGES)] < 0.9 and precision[("laplace", EDGES)] < 0.9
    assert ("saliency", RANDOM) in precision
    modality = {(r.method, r.model): r for r in result.modality}
    row = modality[("gradient_x_input", TRAINED)]
    assert row.carrier == "flair" and row.top_modality == "flair" and row.agrees and row.carrier_share == pytest.approx(1.0)
    assert row.expected_share == pytest.approx(3.0 / 3.1)
    paths = result.to_csv(tmp_path / "out")
    assert [p.name for p in paths] == ["groundtruth_precision.csv", "groundtruth_modality.csv"]


def test_the_carrier_against_the_surroundings_is_what_tells_a_core_from_its_rim():
    """A necrotic core as the generator draws it: bright on T2 like its rim, dark on T1ce where the rim enhances."""
    from napari_segxai.core.trust.groundtruth import surroundings_contrast

    shape = (20, 20, 20)
    rng = np.random.default_rng(0)
    t2, t1ce = rng.normal(0.0, 0.1, shape), rng.normal(0.0, 0.1, shape)
    core = np.zeros(shape, bool)
    core[8:12, 8:12, 8:12] = True
    rim = np.zeros(shape, bool)
    rim[6:14, 6:14, 6:14] = True
    rim &= ~core
    t2[rim | core] += 3.0              # the whole tumour bright on T2
    t1ce[rim] += 2.0                   # the rim enhances, the core does not
    contrast = surroundings_contrast(np.stack([t2, t1ce]), core)
    assert abs(contrast[1]) > abs(contrast[0]) and contrast[1] < 0   # T1ce carries the core, dark against its rim
    healthy = ~(rim | core)
    against_healthy = [(c[core].mean() - c[healthy].mean()) / c[healthy].std() for c in (t2, t1ce)]
    assert abs(against_healthy[0]) > abs(against_healthy[1])        # against healthy brain it would be T2
    silent = np.zeros((2, *shape))
    assert surroundings_contrast(silent, core).tolist() == [0.0, 0.0]  # no signal around: no contrast
    problem = linear_problem()
    labelled = dataclasses.replace(problem, label=problem.target.masks[0].astype(np.int16), class_labels=(1,))
    with pytest.raises(ValueError, match="carrier definition"):
        ground_truth_benchmark(labelled, ["saliency"], carrier="nearby")
    rows = ground_truth_benchmark(labelled, ["saliency"], random_weights=False, edge_filters=()).modality
    assert [r.class_name for r in rows] == ["lesion"]   # any labelled case has modality rows, no signature needed


def test_benchmark_needs_a_true_label():
    with pytest.raises(ValueError, match="true label"):
        ground_truth_benchmark(linear_problem(), ["saliency"])


def test_gradient_x_input_of_a_linear_model_lands_in_its_region():
    problem = linear_problem(shape=(8, 8, 8))
    relevance, _ = relevance_of(problem, "gradient_x_input")
    assert explanation_precision(relevance[0], problem.target.masks[0]) == 1.0


class FlairLesionNet2D(torch.nn.Module):
    """The same per-pixel rule as FlairLesionNet, for a slice-wise (2D) card."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]).view(3, 2, 1, 1))
            self.conv.bias.copy_(torch.tensor([2.0, -2.0, -6.0]))

    def forward(self, x):
        return self.conv(x)


def test_slice_wise_card_problem_keeps_the_slices_of_the_region(tmp_path):
    card = load_model_card(write_card(
        tmp_path / "card2d", spatial_dims=2, slice_axis=2,
        kwargs={"spatial_dims": 2, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2]},
        preprocessing={"spacing": [2.0, 2.0], "normalization": "none"}, inference={"roi_size": [8, 8]}))
    problem = case_problem(flair_case(), card, classes=["edema"], network=FlairLesionNet2D(), margin=1, device="cpu")
    assert problem.spatial_shape == (8, 8, 6)              # in-plane: multiples of 8; along the slices: the region's 6
    assert problem.target.masks[0].sum() == 6 * 6 * 6
    result = ground_truth_benchmark(problem, ["saliency"], random_weights=False)
    assert result.precision[0].precision == 1.0
