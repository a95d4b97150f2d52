"""No labels outside the head: voxels with no signal in any input channel are background in every segmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _cards import write_card
from napari_segxai.core.case import Case
from napari_segxai.core.model.inference import outside_head, segment
from napari_segxai.core.model.loading import load_model_card

BORDER = 3


class LabelsEverywhere(torch.nn.Module):
    """A toy network that predicts class 1 (edema) at every voxel, whatever the input."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.classes = classes
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        logits = torch.zeros((x.shape[0], self.classes, *x.shape[2:]), device=x.device)
        logits[:, 1] = 5.0 * self.scale
        return logits


def _bordered_case(background=(0.0, 0.0), shape=(16, 16, 16)) -> Case:
    """Two channels with signal inside and the given constant value in a BORDER-voxel frame (2 mm voxels)."""
    rng = np.random.default_rng(0)
    channels = np.empty((2, *shape), np.float32)
    inside = (slice(BORDER, -BORDER),) * 3
    for c, value in enumerate(background):
        channels[c] = value
        channels[c][inside] = rng.uniform(1.0, 2.0, (shape[0] - 2 * BORDER,) * 3)
    return Case(channels, ("flair", "t1"), np.diag([2.0, 2.0, 2.0, 1.0]), name="bordered")


def _card(tmp_path, **overrides):
    return load_model_card(write_card(tmp_path / "model", **overrides))


def test_labels_outside_the_head_are_removed_and_counted(tmp_path):
    case, card = _bordered_case(), _card(tmp_path)
    result = segment(case, card, network=LabelsEverywhere(), device="cpu")
    frame = np.ones(case.shape, bool)
    frame[(slice(BORDER, -BORDER),) * 3] = False
    assert (result.labels[frame] == 0).all() and (result.labels[~frame] == 2).all()
    assert result.outside_removed == int(frame.sum())
    np.testing.assert_array_equal(result.probabilities[0][frame], 1.0)
    np.testing.assert_array_equal(result.probabilities[1:, frame], 0.0)


def test_background_is_a_channels_minimum_as_well_as_zero(tmp_path):
    """A channel written with a constant negative background (its minimum) counts as no signal there too."""
    case = _bordered_case(background=(-0.7, 0.0))
    outside = outside_head(case, _card(tmp_path))
    assert outside.sum() == 16 ** 3 - 10 ** 3
    signal = _bordered_case()  # one channel with signal at a voxel keeps the voxel inside
    signal.channels[1, 0, 0, 0] = 1.5
    assert not outside_head(signal, _card(tmp_path))[0, 0, 0]


def test_sigmoid_regions_are_all_off_outside(tmp_path):
    card = _card(tmp_path, activation="sigmoid")
    result = segment(_bordered_case(), card, network=LabelsEverywhere(), device="cpu")
    assert result.outside_removed == 16 ** 3 - 10 ** 3
    assert (result.labels[0, 0] == 0).all() and (result.probabilities[:, 0, 0] == 0).all()


def test_cli_says_how_many_voxels_were_removed(tmp_path, tiny_case_dir, capsys):
    from napari_segxai.cli import main

    folder = tiny_case_dir(modalities=("flair", "t1"))
    card_path = write_card(tmp_path / "model")
    assert main(["segment", str(folder), "--model", str(card_path), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    assert "labelled voxels outside the head" in capsys.readouterr().out


@pytest.mark.slow
def test_no_labels_outside_the_head_on_the_ms_case(realdata):
    """The bundled tumour model on a real MS case: nothing labelled where every sequence is 0."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import default_model_card

    case = load_case(realdata / "open_ms_patient19")
    card = default_model_card()
    result = segment(case, card, device="cpu")
    assert not result.labels[outside_head(case, card)].any()
