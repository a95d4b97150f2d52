"""Inside the network on a real nnU-Net v2 model folder (tests/_nnunet.py's, built once per session): the layer tree
comes from the folds' own modules, a layer's feature maps equal its output on nnU-Net's grid (padded to one patch as
nnU-Net pads) put on the case grid, deep supervision's full-resolution head is the one read, and segxai inspect runs
end to end on the folder."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_segxai.cli import main
from napari_segxai.core.internals.features import feature_maps
from napari_segxai.core.internals.layers import recording
from napari_segxai.core.internals.outputs import card_layer_tree
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.card import build_network
from napari_segxai.core.model.ensemble import FoldEnsemble, ensemble_members
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.model.preprocess import preprocess

pytest.importorskip("nnunetv2")

LAYER = "encoder.stages.1.0.convs.0.conv"  # a member's second-stage convolution: half the patch's resolution


def _padded_to_patch(image: torch.Tensor, patch) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """The image zero-padded to the patch, half the missing voxels before (nnU-Net's pad_nd_image), and the way back."""
    spatial = image.shape[2:]
    before = [max(p - s, 0) // 2 for p, s in zip(patch, spatial)]
    after = [max(p - s, 0) - b for p, s, b in zip(patch, spatial, before)]
    pad = [v for b, a in zip(reversed(before), reversed(after)) for v in (b, a)]
    return F.pad(image, pad), tuple(slice(b, b + s) for b, s in zip(before, spatial))


def test_layer_tree_and_feature_maps_of_an_nnunet_folder_are_the_folds_own(nnunet_model):
    card = load_model_card(nnunet_model.folder)
    network = build_network(card, "cpu")
    assert isinstance(network, FoldEnsemble)
    tree = {layer.name: layer for layer in card_layer_tree(card, network)}
    plans = json.loads((nnunet_model.folder / "plans.json").read_text())["configurations"]["3d_fullres"]
    features = plans["architecture"]["arch_kwargs"]["features_per_stage"]
    patch = tuple(plans["patch_size"])
    for fold in (0, 1):  # both folds' modules, named by fold, with their shapes on one patch of zeros
        assert tree[f"members.{fold}.encoder.stages.0.0.convs.0.conv"].output_shape == (1, features[0]) + patch
        assert tree[f"members.{fold}.{LAYER}"].output_shape == (1, features[1]) + tuple(p // 2 for p in patch)
        assert tree[f"members.{fold}.{LAYER}"].kind == "Conv3d"
    case = load_case(nnunet_model.case)
    image, grid = preprocess(case, card)
    assert any(s < p for s, p in zip(image.shape[2:], patch))  # the grid is smaller than a patch: it must be padded
    result = feature_maps(case, card, f"members.1.{LAYER}", network=network, device="cpu", keep=2)
    assert result.maps.shape == (2,) + case.shape and result.n_channels == features[1] and result.windows == 1
    np.testing.assert_allclose(result.affine, case.affine)
    padded, unpad = _padded_to_patch(image, patch)
    with recording(network, [f"members.1.{LAYER}"]) as out, torch.no_grad():
        logits = network(padded)[(slice(None), slice(None)) + unpad]
    direct = F.interpolate(out[f"members.1.{LAYER}"], size=patch, mode="trilinear")[(0, slice(None)) + unpad]
    for i, c in enumerate(result.channels):
        np.testing.assert_allclose(result.maps[i], grid.to_case_grid(direct[c]).numpy(), atol=1e-4)
    head = result.labels >= 0  # -1: no input signal, or outside nnU-Net's crop of the case
    assert 0.1 < head.mean() < 1
    expected = np.asarray(grid.to_case_grid(logits[0].argmax(0).float(), interpolation="nearest")).astype(np.int16)
    np.testing.assert_array_equal(result.labels[head], expected[head])  # the classes of the folds' mean logits
    assert (result.labels > 0).any()
    # deep supervision on: the fold returns one output per resolution; the full-resolution head is the one read
    member = ensemble_members(network)[1]
    member.decoder.deep_supervision = True
    with torch.no_grad():
        heads = member(padded)
    assert isinstance(heads, (list, tuple)) and heads[0].shape[2:] == padded.shape[2:]
    deep = feature_maps(case, card, LAYER, network=member, device="cpu", channels=list(result.channels))
    np.testing.assert_allclose(deep.maps, result.maps, atol=1e-5)  # the same fold's layer, run alone
    expected = np.asarray(grid.to_case_grid(heads[0][(0, slice(None)) + unpad].argmax(0).float(),
                                            interpolation="nearest")).astype(np.int16)
    np.testing.assert_array_equal(deep.labels[head], expected[head])

def test_inspect_runs_end_to_end_on_an_nnunet_folder(nnunet_model, tmp_path, capsys):
    out = tmp_path / "out"
    layer = LAYER  # one fold: the fold's network itself, its modules named as nnU-Net names them
    assert main(["inspect", str(nnunet_model.case), "--model", str(nnunet_model.folder), "--folds", "0",
                 "--no-mirroring", "--out", str(out), "--layers", layer, "--keep", "2", "--surrogate",
                 "--device", "cpu"]) == 0
    case = load_case(nnunet_model.case)
    record = json.loads((out / f"{case.name}_inspect.json").read_text())
    assert layer in [entry["name"] for entry in record["layers"]]
    assert record["filters"]["layer"] == "encoder.stages.0.0.convs.0.conv"
    assert sorted(record["filters"]["files"]) == ["flair", "t1", "t1ce", "t2"]
    features = record["feature_maps"][0]
    assert features["layer"] == layer and len(features["kept"]) == 2 and features["patches"]
    image = nib.load(features["file"])
    assert image.shape == case.shape + (2,)
    np.testing.assert_allclose(image.affine, case.affine)
    surrogate = record["surrogate"]
    assert 0 <= surrogate["agreement"] <= 1
    labels = nib.load(surrogate["file"])
    assert labels.shape == case.shape and set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2, 3}
    np.testing.assert_allclose(labels.affine, case.affine)
    assert f"{layer} (Conv3d)" in capsys.readouterr().out
