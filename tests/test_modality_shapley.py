"""modality_shapley: exact Shapley values of the input sequences, on toy networks where the answer is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from _cards import lps_affine, write_card
from napari_segxai.cli import main
from napari_segxai.core.attribution import available_methods, explain, get_method, region_target
from napari_segxai.core.attribution.modality_shapley import (
    SEQUENCE_BASELINES, sequence_baseline, sequence_shapley, sequence_values,
)

SIDE = 12


class ToyNet(torch.nn.Module):
    """Three classes from three channels: class 1 sees only channel 0; class 2 is symmetric in channels 1 and 2."""

    def forward(self, x):
        c0, c1, c2 = x[:, 0], x[:, 1], x[:, 2]
        background = torch.zeros_like(c0)
        only_first = torch.tanh(2 * c0) + c0**2
        symmetric = c1 * c2 + torch.relu(c1 + c2)
        return torch.stack([background, only_first, symmetric], dim=1)


def region() -> np.ndarray:
    mask = np.zeros((SIDE,) * 3, dtype=bool)
    mask[3:9, 3:9, 3:9] = True
    return mask


def toy_input() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand((1, 3) + (SIDE,) * 3, generator=generator) + 0.5
    x[:, 2] = x[:, 1]   # channels 1 and 2 equal: the symmetric class cannot tell them apart
    return x


def tiny_unet(channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(3, channels, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()


def scalars(net, x, target) -> np.ndarray:
    with torch.no_grad():
        return target.scalars(net(x))[0].double().numpy()


def brute_force_shapley(net, x, baseline, target) -> np.ndarray:
    """Shapley values (K_t, C) by the definition: marginal contributions averaged over every order of the channels."""
    m = x.shape[1]
    phi = np.zeros((len(target.classes), m))
    for order in itertools.permutations(range(m)):
        present: list[int] = []
        for channel in order:
            before = scalars(net, _keep(x, baseline, present), target)
            present.append(channel)
            phi[:, channel] += scalars(net, _keep(x, baseline, present), target) - before
    return phi / math.factorial(m)


def _keep(x, baseline, present):
    out = baseline.clone()
    out[:, present] = x[:, present]
    return out


def test_the_only_input_of_a_class_gets_all_of_its_value():
    net, x = ToyNet(), toy_input()
    target = region_target(region(), [1, 2], 3)
    values = sequence_shapley(net, x, target, baseline="zeros")
    full, empty = scalars(net, x, target), scalars(net, torch.zeros_like(x), target)
    np.testing.assert_allclose(values.values[0], [full[0] - empty[0], 0.0, 0.0], rtol=1e-6, atol=1e-6)
    assert values.carrier("class 1") == "channel 0"
    np.testing.assert_allclose(values.shares[0], [1.0, 0.0, 0.0], atol=1e-7)


def test_symmetric_channels_get_equal_values():
    net, x = ToyNet(), toy_input()
    values = sequence_shapley(net, x, region_target(region(), [1, 2], 3), baseline="mean")
    symmetric = values.values[1]
    assert symmetric[0] == pytest.approx(0.0, abs=1e-6)
    assert symmetric[1] == pytest.approx(symmetric[2], rel=1e-6)
    assert symmetric[1] > 0


@pytest.mark.parametrize("baseline", SEQUENCE_BASELINES)
def test_values_are_the_shapley_values_and_add_up_to_the_change(baseline):
    net, x = tiny_unet(), torch.randn((1, 3) + (SIDE,) * 3, generator=torch.Generator().manual_seed(1))
    target = region_target(region(), [1, 2], 3)
    reference = sequence_baseline(x, baseline)
    values = sequence_shapley(net, x, target, baseline=baseline)
    np.testing.assert_allclose(values.values, brute_force_shapley(net, x, reference, target), rtol=1e-4, atol=1e-5)
    change = scalars(net, x, target) - scalars(net, reference, target)
    np.testing.assert_allclose(values.values.sum(1), change, rtol=1e-5, atol=1e-5)   # efficiency
    np.testing.assert_allclose(values.full - values.empty, change, rtol=1e-5, atol=1e-5)


def test_each_channel_map_sums_to_its_value_with_one_sign():
    net, x = tiny_unet(), torch.randn((1, 3) + (SIDE,) * 3, generator=torch.Generator().manual_seed(2))
    target = region_target(region(), [1, 2], 3)
    result = explain(net, x, target, "modality_shapley", channel_names=("t1", "t2", "flair"))
    exact = sequence_shapley(net, x, target, channel_names=("t1", "t2", "flair"))
    maps = result.relevance.astype(np.float64)
    np.testing.assert_allclose(maps.reshape(2, 3, -1).sum(2), exact.values, rtol=1e-4, atol=1e-5)
    assert (maps * np.sign(exact.values)[:, :, None, None, None] >= 0).all()
    read_back = sequence_values(result)
    np.testing.assert_allclose(read_back.values, exact.values, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(read_back.shares, exact.shares, atol=1e-5)
    assert read_back.channel_names == ("t1", "t2", "flair") and read_back.baseline == "mean"
    line = read_back.lines()[0]
    assert line.startswith("class 1: ") and line.count("%") == 3


def test_a_map_is_spread_over_gradient_x_input():
    net, x = tiny_unet(), torch.randn((1, 3) + (SIDE,) * 3, generator=torch.Generator().manual_seed(4))
    target = region_target(region(), [1], 3)
    maps = explain(net, x, target, "modality_shapley").relevance[0].astype(np.float64)
    gxi = np.abs(explain(net, x, target, "gradient_x_input").relevance[0].astype(np.float64))
    for c in range(3):
        np.testing.assert_allclose(np.abs(maps[c]) / np.abs(maps[c]).sum(), gxi[c] / gxi[c].sum(), rtol=1e-3, atol=1e-9)


def test_two_to_the_channels_forward_passes_serve_every_class():
    net, x = tiny_unet(), torch.randn((1, 3) + (SIDE,) * 3)
    seen = []
    handle = net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        get_method("modality_shapley", batch_size=3).attribute(net, x, region_target(region(), [1, 2], 3))
    finally:
        handle.remove()
    assert sum(seen) == 2**3 and max(seen) <= 3


def test_mean_baseline_keeps_the_background_and_flattens_the_brain():
    x = torch.zeros((1, 2, 6, 6, 6))
    x[:, :, 1:5, 1:5, 1:5] = torch.arange(64, dtype=torch.float32).view(4, 4, 4) + 1
    x[:, 1] *= -1
    reference = sequence_baseline(x, "mean")
    brain = x[0, 0] != 0
    assert (reference[:, :, ~brain] == 0).all()
    np.testing.assert_allclose(reference[0, 0, brain].numpy(), 32.5)
    np.testing.assert_allclose(reference[0, 1, brain].numpy(), -32.5)


def test_results_do_not_depend_on_the_batch_size():
    net, x = tiny_unet(), torch.randn((1, 3) + (SIDE,) * 3)
    target = region_target(region(), [1, 2], 3)
    one, many = (get_method("modality_shapley", batch_size=b).attribute(net, x, target) for b in (1, 8))
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: get_method("modality_shapley", baseline="noise"), "choose one of"),
    (lambda: sequence_shapley(ToyNet(), torch.zeros((1, 13, 4, 4, 4)), region_target(np.ones((4, 4, 4), bool), [1], 3)),
     "stops at 12 channels"),
    (lambda: sequence_values(explain(ToyNet(), toy_input(), region_target(region(), [1], 3), "saliency")),
     "explain with method modality_shapley"),
])
def test_mistakes_are_one_sentence(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_segxai_explain_lists_and_runs_the_method(tmp_path, tiny_case_dir, capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert "  modality_shapley " in capsys.readouterr().out
    assert "modality_shapley" in available_methods()
    case = tiny_case_dir(modalities=("t1", "flair"), affine=lps_affine((1.0, 1.0, 2.0)), shape=(16, 16, 12), name="Case001")
    card, out = write_card(tmp_path / "model"), tmp_path / "out"
    assert main(["explain", str(case), "--model", str(card), "--out", str(out), "--device", "cpu",
                 "--method", "modality_shapley", "--param", "baseline=zeros", "--classes", "edema"]) == 0
    assert (out / "Case001_modality_shapley_edema.nii.gz").is_file()
    assert "with modality_shapley" in capsys.readouterr().out


def test_segxai_evaluate_reports_whether_the_top_sequence_is_the_carrier(tmp_path, tiny_case_dir, capsys):
    import csv
    import json

    case = tiny_case_dir(modalities=("t1", "flair"), affine=lps_affine((2.0, 2.0, 2.0)), name="Case000", seed=0)
    (case / "ground_truth.json").write_text(json.dumps({"modality_signature": {"edema": {"t1": 0.2, "flair": 2.0}}}))
    card, out = write_card(tmp_path / "model"), tmp_path / "quality"
    assert main(["evaluate", "--model", str(card), "--cases", str(case), "--methods", "modality_shapley",
                 "--out", str(out), "--device", "cpu", "--classes", "edema", "--modes", "cascading",
                 "--max-steps", "1", "--subsets", "4", "--deletion-steps", "2", "--noise-samples", "1",
                 "--margin", "2"]) == 0
    with open(out / "quality.csv") as handle:
        (row,) = [r for r in csv.DictReader(handle) if r["method"] == "modality_shapley"]
    assert row["modality_agrees"] in ("0.0", "1.0") and 0.0 <= float(row["carrier_share"]) <= 1.0
    assert "modality_agrees" in capsys.readouterr().out


def test_any_method_carries_the_sequences_exact_values_into_roi_importance(tmp_path, tiny_case_dir, capsys):
    """explain_case(sequences=True): saliency draws the maps, Shapley values say which sequence carries each class."""
    import json

    from napari_segxai.core.attribution import explain_case
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.roi import roi_importance

    folder = tiny_case_dir(modalities=("t1", "flair"), affine=lps_affine((2.0, 2.0, 2.0)), name="Case002")
    case, card = load_case(folder), load_model_card(write_card(tmp_path / "model"))
    by_saliency = explain_case(case, card, method="saliency", classes=["edema"], device="cpu", sequences=True)
    exact = explain_case(case, card, method="modality_shapley", classes=["edema"], device="cpu", sequences=True)
    np.testing.assert_allclose(by_saliency.sequences.values, exact.sequences.values, rtol=1e-5, atol=1e-6)
    assert by_saliency.sequences.channel_names == card.modalities
    table = roi_importance(by_saliency, {"brain": np.ones(case.shape, bool)})
    np.testing.assert_allclose(table.modality_share, by_saliency.sequences.shares, atol=1e-9)
    assert table.modality_source == "exact Shapley values of the sequences" and table.method == "saliency"
    plain = roi_importance(explain_case(case, card, method="saliency", classes=["edema"], device="cpu"),
                           {"brain": np.ones(case.shape, bool)})
    assert plain.modality_source == "the saliency maps"

    out = tmp_path / "out"
    assert main(["explain", str(folder), "--model", str(card.path), "--out", str(out), "--device", "cpu",
                 "--classes", "edema"]) == 0
    said = capsys.readouterr().out
    assert "Which sequence carries each class (exact Shapley values" in said and "  edema: " in said
    record = json.loads((out / "Case002_saliency.json").read_text())
    assert record["sequence_shapley"]["edema"] == pytest.approx(by_saliency.sequences.for_class("edema"), rel=1e-5)
