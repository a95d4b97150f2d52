"""Mirroring at inference (``inference.mirror_axes``): the mirror images' logits flipped back and averaged."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from _cards import write_card
from napari_segxai.cli._common import UserError, load_card

from napari_segxai.core.case import Case
from napari_segxai.core.model.inference import count_windows, infer, mirror_subsets, segment
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.training.config import make_config


class LopsidedNet(torch.nn.Module):
    """Seeded random convolutions with no symmetry: its output on a mirrored input is not the mirrored output."""

    def __init__(self, spatial_dims: int = 3):
        super().__init__()
        torch.manual_seed(3)
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        self.net = torch.nn.Sequential(conv(2, 4, 3, padding=1), torch.nn.Tanh(), conv(4, 3, 3, padding=1))
        self.windows = 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.net(x)


def card_with(tmp_path, **inference):
    """The tiny card (flair, t1; three classes) on the case's own grid with these inference settings."""
    options = {"roi_size": [16, 16, 16], "overlap": 0.5, "mode": "constant", **inference}
    return load_model_card(write_card(tmp_path / "card", preprocessing={"spacing": None, "normalization": "none"},
                                      inference=options))


def test_mirror_subsets_start_with_no_flip_and_cover_every_combination():
    assert mirror_subsets(()) == [()]
    assert mirror_subsets((0,)) == [(), (0,)]
    assert mirror_subsets((0, 2)) == [(), (0,), (2,), (0, 2)]
    assert len(mirror_subsets((0, 1, 2))) == 8


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2)])
def test_logits_are_the_mean_of_the_mirror_images_flipped_back(tmp_path, axes):
    card = card_with(tmp_path, mirror_axes=list(axes))
    image = torch.randn(1, 2, 16, 16, 16)  # one window: the mean can be written out by hand
    net = LopsidedNet().eval()
    with torch.no_grad():
        plain = infer(image, dataclasses.replace(card, mirror_axes=()), net)
        mirrored = infer(image, card, net)
        expected = torch.stack([torch.flip(net(torch.flip(image, [2 + a for a in s])), [2 + a for a in s])
                                for s in mirror_subsets(axes)]).mean(0)
    torch.testing.assert_close(mirrored, expected, rtol=1e-5, atol=1e-5)
    assert (mirrored - plain).abs().max() > 1e-3  # the network is lopsided: mirroring changed the result


def test_progress_counts_the_windows_of_every_mirror_image(tmp_path):
    card = card_with(tmp_path, mirror_axes=[0, 2], sw_batch_size=2)
    net = LopsidedNet().eval()
    calls = []
    with torch.no_grad():
        infer(torch.randn(1, 2, 24, 20, 16), card, net, progress=lambda done, total: calls.append((done, total)))
    windows = count_windows((24, 20, 16), (16, 16, 16), 0.5)
    assert net.windows == 4 * windows  # no flip, axis 0, axis 2, both
    assert calls[-1] == (4 * windows, 4 * windows) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_slice_wise_model_mirrors_within_the_slice(tmp_path):
    card = load_model_card(write_card(
        tmp_path / "card2d", spatial_dims=2, slice_axis=2,
        kwargs={"spatial_dims": 2, "in_channels": 2, "out_channels": 3, "channels": [4, 8], "strides": [2]},
        preprocessing={"spacing": None, "normalization": "none"},
        inference={"roi_size": [12, 10], "overlap": 0.5, "mode": "constant", "mirror_axes": [1]}))
    image = torch.randn(1, 2, 12, 10, 5)  # five slices along axis 2, each one window
    net = LopsidedNet(spatial_dims=2).eval()
    with torch.no_grad():
        logits = infer(image, card, net)
        slices = image[0].movedim(3, 0)  # (5, 2, 12, 10)
        expected = (net(slices) + torch.flip(net(torch.flip(slices, [3])), [3])) / 2
    torch.testing.assert_close(logits, expected.movedim(0, 3).unsqueeze(0), rtol=1e-5, atol=1e-5)


def test_segment_on_a_case_uses_the_cards_mirroring(tmp_path):
    rng = np.random.default_rng(0)
    case = Case(channels=rng.normal(size=(2, 16, 16, 16)).astype(np.float32) + 3, modalities=("flair", "t1"),
                affine=np.eye(4), name="noise")
    card = card_with(tmp_path, mirror_axes=[0])
    net = LopsidedNet()
    mirrored = segment(case, card, network=net, device="cpu")
    plain = segment(case, dataclasses.replace(card, mirror_axes=()), network=net, device="cpu")
    assert net.windows == 3  # one window, twice mirrored, once plain
    assert not np.allclose(mirrored.probabilities, plain.probabilities, atol=1e-4)


def test_no_mirroring_on_the_command_line_turns_a_cards_mirroring_off(tmp_path):
    path = write_card(tmp_path / "card", inference={"roi_size": [16, 16, 16], "mirror_axes": [0, 1]})
    options = dict(model=str(path), trust_model=False, folds=None, checkpoint=None)
    assert load_card(argparse.Namespace(**options, no_mirroring=False)).mirror_axes == (0, 1)
    assert load_card(argparse.Namespace(**options, no_mirroring=True)).mirror_axes == ()
    with pytest.raises(UserError, match="--folds and --checkpoint choose parts of an nnU-Net model"):
        load_card(argparse.Namespace(**{**options, "folds": "0"}, no_mirroring=True))


def test_training_config_checks_the_mirror_axes_it_writes_into_the_card():
    assert make_config({"inference": {"mirror_axes": [0]}})["inference"]["mirror_axes"] == [0]
    assert make_config({})["inference"]["mirror_axes"] == []
    with pytest.raises(ValueError, match="inference.mirror_axes must list distinct window axes 0 to 2"):
        make_config({"inference": {"mirror_axes": [3]}})


def test_cohort_workers_leave_the_cards_mirroring_out_when_told(tmp_path):
    from napari_segxai.core.cohort import CohortSettings
    from napari_segxai.core.cohort.runner import worker_model

    path = write_card(tmp_path / "card", inference={"roi_size": [16, 16, 16], "mirror_axes": [0]})
    on, off = CohortSettings(str(path)), CohortSettings(str(path), mirroring=False)
    assert worker_model(on)[0].mirror_axes == (0,) and worker_model(off)[0].mirror_axes == ()
    assert "mirroring" not in on.fingerprint()  # results of earlier runs keep matching
    assert off.fingerprint() == {**on.fingerprint(), "mirroring": False}  # and are not reused for the other setting
