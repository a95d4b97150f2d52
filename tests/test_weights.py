"""Weights: safe loading (a malicious pickle never runs unless trusted), mismatches, atomic saving."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from _cards import write_card
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.weights import (
    UntrustedWeightsError, check_finite, load_into, load_state_dict, save_state_dict,
)


class Payload:
    """Pickles into a call that writes a marker file when unpickled: what an attacker would ship."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def small_state():
    torch.manual_seed(0)
    return torch.nn.Conv3d(2, 3, 3).state_dict()


def test_safetensors_round_trip_is_atomic(tmp_path):
    state = small_state()
    path = save_state_dict(state, tmp_path / "w" / "net.safetensors")
    loaded = load_state_dict(path)
    assert set(loaded) == set(state)
    for key in state:
        torch.testing.assert_close(loaded[key], state[key])
    assert [p.name for p in path.parent.iterdir()] == ["net.safetensors"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as any new file, not mkstemp's 0600
    with pytest.raises(ValueError, match="saved as safetensors"):
        save_state_dict(state, tmp_path / "net.pt")


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = save_state_dict(small_state(), tmp_path / "net.safetensors")
    before = path.read_bytes()
    bad = dict(small_state(), weight=torch.full((3, 2, 3, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="NaN or infinite values in weight"):
        save_state_dict(bad, path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_plain_state_dicts_and_checkpoints_load_weights_only(tmp_path):
    state = small_state()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pth")
    for name in ("plain.pt", "ckpt.pth"):
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(state)
        torch.testing.assert_close(loaded["weight"], state["weight"])


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_does_not_run_unless_trusted(tmp_path, writer):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    payload = {"weight": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(UntrustedWeightsError) as info:
        load_state_dict(path)
    assert not marker.exists()
    message = str(info.value)
    assert "trusted: true" in message and "--trust-model" in message and str(path) in message

    # The payload is real: trusting the file runs it (and what it holds is no state dict).
    with pytest.raises(ValueError):
        load_state_dict(path, trusted=True)
    assert marker.read_text() == "pwned"


def test_malicious_weights_named_by_a_card_do_not_run(tmp_path):
    marker = tmp_path / "marker.txt"
    folder = tmp_path / "m"
    folder.mkdir()
    torch.save({"weight": Payload(marker)}, folder / "weights.pt")
    card = load_model_card(write_card(folder, weights="weights.pt"))
    with pytest.raises(UntrustedWeightsError, match="trusted: true"):
        build_network(card)
    assert not marker.exists()


def test_trusted_card_reads_a_whole_pickled_network(tmp_path):
    folder = tmp_path / "m"
    write_card(folder)
    reference = build_network(load_model_card(folder / "card.yaml"))
    torch.save(reference, folder / "whole.pt")  # a pickled module: needs full unpickling
    with pytest.raises(UntrustedWeightsError):
        build_network(load_model_card(write_card(folder, weights="whole.pt", filename="untrusted.yaml")))
    card = load_model_card(write_card(folder, weights="whole.pt", trusted=True, filename="trusted.yaml"))
    network = build_network(card)
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(x), reference(x))


def test_files_that_are_not_weights(tmp_path):
    (tmp_path / "text.pt").write_text("hello world")
    with pytest.raises(ValueError, match="text.pt is not a readable PyTorch file"):
        load_state_dict(tmp_path / "text.pt")
    (tmp_path / "text.safetensors").write_text("hello world")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_state_dict(tmp_path / "text.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_state_dict(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_state_dict(tmp_path / "absent.safetensors")


def test_non_finite_weights_are_refused(tmp_path):
    state = small_state()
    state["bias"][1] = float("inf")
    torch.save(state, tmp_path / "inf.pt")
    with pytest.raises(ValueError, match=r"inf.pt holds NaN or infinite values in bias"):
        load_state_dict(tmp_path / "inf.pt")
    check_finite({"steps": torch.tensor(3)}, "ints are fine")


def test_mismatched_state_names_missing_unexpected_and_shapes():
    network = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.Conv3d(3, 1, 1))
    state = network.state_dict()
    state.pop("1.bias")
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(4, 2, 3, 3, 3)
    with pytest.raises(ValueError) as info:
        load_into(network, state, "net.safetensors")
    message = str(info.value)
    assert message.startswith("Weights file net.safetensors does not match")
    assert "missing keys 1.bias" in message and "unexpected keys extra.weight" in message
    assert "0.weight (4, 2, 3, 3, 3) in the file vs (3, 2, 3, 3, 3) in the network" in message
    good = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), torch.nn.Conv3d(3, 1, 1)).state_dict()
    load_into(network, good, "net.safetensors")
    assert np.array_equal(network[0].weight.detach().numpy(), good["0.weight"].numpy())
