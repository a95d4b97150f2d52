"""segment(), preprocess() and pick_device(): alignment on the case grid, progress, cancel, 2D models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _cards import cyclic_affine, lps_affine, permuted_affine, write_card
from napari_segxai.core.model import inference as inference_module
from napari_segxai.core.case import Case
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.progress import Cancelled
from napari_segxai.core.model.inference import Segmentation, count_windows, labels_from_probabilities, segment
from napari_segxai.core.model.device import pick_device
from napari_segxai.core.model.preprocess import preprocess

LESION = 3


class ThresholdNet(torch.nn.Module):
    """A 1x1 convolution whose class-1 logit is k * (channel 0 - 0.5): labels = channel 0 > 0.5."""

    def __init__(self, in_channels: int, spatial_dims: int = 3, k: float = 40.0):
        super().__init__()
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        self.conv = conv(in_channels, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = -k
            self.conv.weight[1, 0] = k
            self.conv.bias.copy_(torch.tensor([k / 2, -k / 2]))
        self.windows = 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.conv(x)


def threshold_card(tmp_path, **overrides):
    """A card for ThresholdNet: inputs flair then t1, classes background and lesion, no normalisation."""
    options = dict(
        kwargs={"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "channels": [4, 8], "strides": [2]},
        classes=[{"name": "background", "label": 0, "color": "#000000"},
                 {"name": "lesion", "label": LESION, "color": "#ff0000"}],
        preprocessing={"normalization": "none"},
        inference={"roi_size": [8, 8, 8], "overlap": 0.5},
    )
    options.update(overrides)
    return load_model_card(write_card(tmp_path / "card", **options))


def blocky_case(affine, coarse_shape=(12, 8, 10), seed=0, name="blocky"):
    """Case (t1, flair): flair is a random 0/1 pattern constant over 2-voxel blocks along 1 mm axes."""
    rng = np.random.default_rng(seed)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    repeats = [int(round(2.0 / s)) for s in spacing]
    pattern = rng.integers(0, 2, coarse_shape).astype(np.float32)
    for axis, r in enumerate(repeats):
        pattern = np.repeat(pattern, r, axis=axis)
    t1 = rng.normal(0.5, 1.0, pattern.shape).astype(np.float32)
    return Case(channels=np.stack([t1, pattern]), modalities=("t1", "flair"), affine=affine, name=name)


@pytest.mark.parametrize(
    "affine", [lps_affine((1.0, 1.0, 2.0)), permuted_affine(), cyclic_affine()], ids=["LPS", "PLS", "SLP"]
)
def test_labels_align_voxel_for_voxel_after_reorient_resample_and_undo(tmp_path, affine):
    case = blocky_case(affine)
    before = case.channels.copy()
    card = threshold_card(tmp_path)
    net = ThresholdNet(2)
    result = segment(case, card, network=net, device="cpu")

    assert isinstance(result, Segmentation)
    assert result.labels.shape == case.shape and result.labels.dtype == np.int16
    assert result.probabilities.shape == (2, *case.shape) and result.probabilities.dtype == np.float32
    np.testing.assert_array_equal(result.affine, case.affine)
    expected = np.where(case.channel("flair") > 0.5, LESION, 0)
    np.testing.assert_array_equal(result.labels, expected)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(case.channels, before)  # the input is never modified
    assert result.classes == card.classes and result.device == "cpu" and result.seconds > 0


def test_network_grid_is_resampled_to_card_spacing_in_card_orientation(tmp_path):
    case = blocky_case(permuted_affine())
    card = threshold_card(tmp_path)
    image, grid = preprocess(case, card)
    assert image.shape == (1, 2, *grid.shape)
    assert grid.resampled and np.allclose(grid.spacing, (2.0, 2.0, 2.0))
    # RAS: axis directions of the network grid point right, anterior, superior
    assert np.all(np.diag(grid.affine[:3, :3]) > 0)
    # flair (second case channel) is the first network channel; a network voxel centre sits at the
    # world mean of the two case voxels it covers.
    world = grid.affine @ np.array([3, 4, 2, 1.0])
    inside = np.linalg.inv(case.affine) @ world
    assert np.allclose(inside[:3] % 1, [0.5, 0, 0.5], atol=1e-6)
    case_voxel = np.floor(inside[:3]).astype(int)
    assert image[0, 0, 3, 4, 2] == pytest.approx(case.channel("flair")[tuple(case_voxel)])
    # a case-grid array mapped with the grid lands exactly where preprocess put the image
    moved = grid.to_network_grid(case.channels[::-1].copy(), interpolation="linear")
    np.testing.assert_allclose(moved, image[0].numpy(), atol=1e-6)


def test_to_network_grid_and_back_round_trips_without_resampling(tmp_path):
    case = blocky_case(permuted_affine())
    card = threshold_card(tmp_path, preprocessing={"spacing": None, "normalization": "none"})
    image, grid = preprocess(case, card)
    assert not grid.resampled and grid.shape == tuple(np.array(case.shape)[[1, 0, 2]])
    mask = case.channel("flair") > 0.5
    there = grid.to_network_grid(mask)
    assert there.dtype == np.bool_ and np.array_equal(there, image[0, 0].numpy() > 0.5)
    assert np.array_equal(grid.to_case_grid(there, interpolation="nearest"), mask)


def test_progress_counts_every_window_and_ends_at_total(tmp_path):
    case = blocky_case(lps_affine((1.0, 1.0, 2.0)), coarse_shape=(12, 12, 10))
    card = threshold_card(tmp_path)
    net = ThresholdNet(2)
    calls = []
    segment(case, card, network=net, device="cpu", progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert calls[-1] == (total, total)
    assert total == net.windows == count_windows((12, 12, 10), (8, 8, 8), 0.5)
    dones = [d for d, _ in calls]
    assert dones == list(range(0, total + 1, 2))  # card's sw_batch_size 2: two windows per network call


def test_count_windows_matches_monai_dense_patch_slices():
    from monai.data.utils import dense_patch_slices

    for size, roi, overlap in [((30, 17, 9), (8, 8, 8), 0.25), ((96, 96, 96), (96, 96, 96), 0.5),
                               ((120, 120, 78), (96, 96, 96), 0.25), ((5, 40), (16, 16), 0.5)]:
        padded = [max(s, r) for s, r in zip(size, roi)]
        interval = [r if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(padded, roi)]
        assert count_windows(size, roi, overlap) == len(dense_patch_slices(padded, roi, interval))


def test_cancel_stops_inside_the_pass_it_was_asked_in(tmp_path):
    case = blocky_case(lps_affine((1.0, 1.0, 2.0)), coarse_shape=(12, 12, 10))
    card = threshold_card(tmp_path)
    net = ThresholdNet(2)
    with pytest.raises(Cancelled, match="inside a pass"):  # asked while the second batch of 2 windows runs
        segment(case, card, network=net, device="cpu", should_cancel=lambda: net.windows >= 3)
    assert net.windows == 4


def test_slice_wise_model_segments_each_slice(tmp_path, monkeypatch):
    monkeypatch.setattr(inference_module, "SLICE_BATCH", 4)  # several slice batches
    card = threshold_card(
        tmp_path, spatial_dims=2, slice_axis=2,
        kwargs={"spatial_dims": 2, "in_channels": 2, "out_channels": 2, "channels": [4, 8], "strides": [2]},
        preprocessing={"spacing": [2.0, 2.0], "normalization": "none"},
        inference={"roi_size": [8, 8], "overlap": 0.25},
    )
    assert card.spacing == (2.0, 2.0, None)
    case = blocky_case(lps_affine((1.0, 1.0, 2.0)), coarse_shape=(10, 12, 9))
    net = ThresholdNet(2, spatial_dims=2)
    calls = []
    result = segment(case, card, network=net, device="cpu", progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(result.labels, np.where(case.channel("flair") > 0.5, LESION, 0))
    assert calls[-1] == (net.windows, net.windows) == (9 * count_windows((10, 12), (8, 8), 0.25),) * 2


def test_untrained_unet_from_card_runs_end_to_end(tmp_path):
    card = load_model_card(write_card(tmp_path / "card"))
    case = blocky_case(lps_affine((1.0, 1.0, 2.0)), coarse_shape=(10, 10, 9))
    case = Case(channels=case.channels, modalities=("flair", "t1"), affine=case.affine, name="unet")
    result = segment(case, card)
    assert result.probabilities.shape == (3, *case.shape)
    assert set(np.unique(result.labels)) <= {0, 2, 4}
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-4)
    expected = np.array(card.label_values)[result.probabilities.argmax(0)]
    np.testing.assert_array_equal(result.labels, expected)


def test_missing_modality_names_what_is_missing_and_what_the_case_has(tmp_path):
    card = threshold_card(tmp_path)
    case = blocky_case(lps_affine())
    case = Case(channels=case.channels, modalities=("t1", "t2"), affine=case.affine, name="no-flair")
    with pytest.raises(ValueError, match=r"no-flair has no flair channel.*the case has t1, t2"):
        segment(case, card, network=ThresholdNet(2))


def test_spacing_policies(tmp_path):
    case = blocky_case(lps_affine((1.0, 1.0, 2.0)))
    refuse = threshold_card(tmp_path / "refuse", preprocessing={"spacing_policy": "refuse"})
    with pytest.raises(ValueError, match=r"1 x 1 x 2 mm.*expects 2 x 2 x 2 mm.*spacing_policy"):
        preprocess(case, refuse)
    ignore = threshold_card(tmp_path / "ignore", preprocessing={"spacing_policy": "ignore"})
    image, grid = preprocess(case, ignore)
    assert not grid.resampled and grid.shape == case.shape  # LPS -> RAS only flips


def test_normalizations_never_touch_the_case(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(5, 3, (2, 8, 8, 8)).astype(np.float32)
    data[:, :2] = 0
    before = data.copy()
    # Channels already in the card's order on a RAS grid: the network input starts as a view of the case.
    case = Case(channels=data, modalities=("flair", "t1"), affine=np.eye(4), name="norm")
    for method in ("zscore_nonzero", "zscore", "minmax", "none"):
        card = threshold_card(tmp_path / method, preprocessing={"normalization": method, "spacing": None})
        flair = preprocess(case, card)[0][0, 0].numpy()
        if method == "zscore_nonzero":
            inside = flair[2:]
            assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3 and np.all(flair[:2] == 0)
        elif method == "zscore":
            assert abs(flair.mean()) < 1e-4 and abs(flair.std() - 1) < 1e-3
        elif method == "minmax":
            assert flair.min() == 0 and flair.max() == pytest.approx(1)
        else:
            np.testing.assert_array_equal(flair, before[0])
        np.testing.assert_array_equal(case.channels, before)


def test_sigmoid_labels_follow_nested_regions(tmp_path):
    card = threshold_card(
        tmp_path, activation="sigmoid",
        kwargs={"spatial_dims": 3, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2]},
        classes=[{"name": "whole", "label": 2}, {"name": "core", "label": 1}, {"name": "enhancing", "label": 4}],
    )
    probabilities = np.array([[0.9, 0.9, 0.9, 0.1], [0.1, 0.8, 0.8, 0.1], [0.1, 0.2, 0.7, 0.9]], np.float32)
    labels = labels_from_probabilities(probabilities.reshape(3, 4, 1, 1), card)
    assert labels.ravel().tolist() == [2, 1, 4, 4]


def test_output_channels_must_match_classes(tmp_path):
    card = threshold_card(tmp_path)
    net = torch.nn.Conv3d(2, 5, 1)
    with pytest.raises(ValueError, match=r"returned 5 channels but the card's 'classes' lists 2"):
        segment(card=card, case=blocky_case(lps_affine()), network=net)


def test_network_that_cannot_take_the_input_gives_a_clear_error(tmp_path):
    card = threshold_card(tmp_path)
    with pytest.raises(ValueError, match=r"failed on input windows shaped \(2, 2, 8, 8, 8\) \(.*channels"):
        segment(blocky_case(lps_affine()), card, network=torch.nn.Conv3d(3, 2, 1))


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    automatic = pick_device(None)
    assert automatic.type == ("cuda" if torch.cuda.is_available() else automatic.type)
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA was requested"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        pick_device("tpu-please")


@pytest.mark.slow
def test_real_case_segments_on_its_own_grid(realdata, tmp_path):
    from napari_segxai.core.io.nifti import load_case

    case = load_case(realdata / "TCGA-DU-7294")
    card = load_model_card(write_card(
        tmp_path / "card", modalities=["t1", "t1ce", "t2", "flair"],
        kwargs={"spatial_dims": 3, "in_channels": 4, "out_channels": 3, "channels": [4, 8], "strides": [2]},
        inference={"roi_size": [64, 64, 64], "sw_batch_size": 1},
    ))
    result = segment(case, card, device="cpu")
    assert result.labels.shape == case.shape and result.probabilities.shape == (3, *case.shape)
    np.testing.assert_array_equal(result.affine, case.affine)


def test_a_case_too_large_for_memory_is_refused_before_any_work(tmp_path):
    card = threshold_card(tmp_path)
    # 2 x 2000^3 voxels that take no memory (a broadcast view): segmenting them needs about 320 GB.
    huge = Case(np.broadcast_to(np.float32(1), (2, 2000, 2000, 2000)), ("t1", "flair"), np.eye(4), name="huge")
    network = ThresholdNet(2)
    with pytest.raises(ValueError, match=r"Segmenting case huge \(2000 x 2000 x 2000 voxels, 2 classes\) on cpu "
                                         r"needs about 320 GB of memory but only [\d.,]+ GB is available"):
        segment(huge, card, network=network, device="cpu")
    assert network.windows == 0
