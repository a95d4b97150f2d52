"""Strongest-responding patches over the training set (issue 22): on a tiny model trained with a training record, the
patches come from the record's training cases and are each channel's maxima there, known by construction for a
layer that copies the input sequences; a model without a record is refused in a sentence."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from _cards import write_card
from napari_segxai.cli import main
from napari_segxai.core.influence import training_case, training_record
from napari_segxai.core.influence.training_set import CASES_ENV
from napari_segxai.core.internals.training_patches import training_keys, training_patches
from napari_segxai.core.io.generated_cases import write_case
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.preprocess import preprocess
from napari_segxai.core.progress import Cancelled
from napari_segxai.core.training.synth import generate_case
from test_train import TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TINY (a 4-8 channel UNet, 10 steps on toy seeds 50..53) with its training record, and a folder for its cases."""
    from napari_segxai.core.training.loop import train

    root = tmp_path_factory.mktemp("training-patches")
    return train(TINY, root / "tiny").card, root / "cases"


class _CopiesSequences(nn.Module):
    """Layer ``features`` copies the input sequences (channel c = sequence c); class 1's logit is sequence 0."""

    def __init__(self, n_inputs: int, n_classes: int):
        super().__init__()
        self.features = nn.Conv3d(n_inputs, n_inputs, 1, bias=False)
        self.n_classes = n_classes
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(n_inputs).view(n_inputs, n_inputs, 1, 1, 1))

    def forward(self, x):
        f = self.features(x)
        zero = torch.zeros_like(f[:, :1])
        return torch.cat([zero, f[:, :1]] + [zero] * (self.n_classes - 2), 1)


def _png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    header = open(path, "rb").read(24)
    return struct.unpack(">I", header[16:20])[0], struct.unpack(">I", header[20:24])[0]


def test_training_patches_are_each_channels_maxima_over_the_chosen_training_cases(trained, monkeypatch):
    card_path, cases = trained
    monkeypatch.setenv(CASES_ENV, str(cases))
    card = load_model_card(card_path)
    seeds = training_record(card).seeds
    assert seeds == (50, 51, 52, 53) and training_keys(card, 2) == (50, 52) and training_keys(card, 9) == seeds
    network = _CopiesSequences(len(card.modalities), len(card.classes))
    reports = []
    found = training_patches(card, "features", [0, 3], cases=2, count=3, network=network, device="cpu",
                             progress=lambda done, total: reports.append((done, total)))
    searched = [training_case(card, seed) for seed in (50, 52)]
    assert found.cases == tuple(case.name for case in searched)
    assert reports[-1] == (200, 200) and [d for d, _ in reports] == sorted(d for d, _ in reports)
    for i, channel in enumerate((0, 3)):
        # by construction the channel's map is sequence ``channel`` as the network sees it (normalised), on the case grid
        on_case = [np.asarray(preprocess(case, card)[1].to_case_grid(preprocess(case, card)[0][0, channel]))
                   for case in searched]
        np.testing.assert_allclose(found.maxima[i], [m.max() for m in on_case], rtol=1e-5)
        best = int(np.argmax([m.max() for m in on_case]))
        top = found.patches[channel][0]
        assert top.case == searched[best].name and top.channel == channel
        assert top.centre == tuple(int(v) for v in np.unravel_index(np.argmax(on_case[best]), on_case[best].shape))
        assert top.response == pytest.approx(float(on_case[best].max()), rel=1e-5)
        raw = np.asarray(searched[best].channels[channel], dtype=np.float32)
        assert top.image[(channel, 8, 8, 8)] == raw[top.centre]  # the input patch is centred on the response
        responses = [p.response for p in found.patches[channel]]
        assert len(responses) == 3 and responses == sorted(responses, reverse=True)
        assert {p.case for p in found.patches[channel]} <= set(found.cases)
    with pytest.raises(Cancelled):
        training_patches(card, "features", [0], cases=1, network=network, device="cpu", should_cancel=lambda: True)


def test_inspect_writes_training_patches_and_refuses_a_model_without_a_training_record(trained, tmp_path, monkeypatch,
                                                                                        capsys):
    card_path, cases = trained
    monkeypatch.setenv(CASES_ENV, str(cases))
    case = write_case(generate_case(7, size="toy"), tmp_path / "synth-toy-00000007")
    out = tmp_path / "out"
    assert main(["inspect", str(case), "--model", str(card_path), "--out", str(out), "--layers", "model.0.conv",
                 "--keep", "2", "--training-patches", "2", "--device", "cpu"]) == 0
    record = json.loads(next(out.glob("*_inspect.json")).read_text())
    entry = record["feature_maps"][0]["training_patches"]
    assert entry["layer"] == "model.0.conv" and len(entry["cases"]) == 2
    assert set(entry["channels"]) == {str(c) for c in record["feature_maps"][0]["kept"]}
    for number, channel in entry["channels"].items():
        assert {p["case"] for p in channel["patches"]} <= set(entry["cases"]) and len(channel["patches"]) == 6
        assert channel["patches"][0]["response"] == pytest.approx(max(channel["maxima"].values()), abs=1e-5)
        assert open(channel["file"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        # the same sequences as columns as the case's patches, and a margin left of them naming each row's case
        case_png = record["feature_maps"][0]["patches"][number]
        assert _png_size(channel["file"])[0] > _png_size(case_png)[0] + 50
    assert "over 2 training case(s)" in capsys.readouterr().out
    untrained = write_card(tmp_path / "card")  # t1 and flair: the toy case has them
    code = main(["inspect", str(case), "--model", str(untrained), "--out", str(tmp_path / "o2"), "--layers",
                 "model.0.conv", "--training-patches", "2", "--device", "cpu"])
    assert code != 0 and not (tmp_path / "o2").exists()
    assert "has no training record" in capsys.readouterr().err


def test_training_cases_whose_files_are_gone_are_skipped_with_a_note(tmp_path):
    import shutil

    from _influence import files_model
    from napari_segxai.core.training.synth import case_name

    card_path, data = files_model(tmp_path / "toy", seeds=(61, 63))
    card = load_model_card(card_path)
    network = _CopiesSequences(len(card.modalities), len(card.classes))
    shutil.rmtree(data / case_name(61, "toy"))
    found = training_patches(card, "features", [0, 3], cases=2, count=2, network=network, device="cpu")
    assert found.cases == (case_name(63, "toy"),) and found.maxima.shape == (2, 1)
    assert found.note.startswith("Skipped 1 training case(s) whose files are not here") and case_name(61, "toy") in found.note
    assert found.note in found.describe()
    shutil.rmtree(data / case_name(63, "toy"))
    with pytest.raises(ValueError, match="None of the 2 training case"):
        training_patches(card, "features", [0], cases=2, network=network, device="cpu")
