"""MONAI bundles as models: the card read from the bundle, predictions equal to the bundle's own
transforms, network and inferer (through monai.bundle), code in a config refused until trusted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _bundle import inference_config, write_bundle
from napari_segxai.cli import main
from napari_segxai.core.model.loading import load_model_card


@pytest.fixture
def toy_case_dir(tmp_path):
    from napari_segxai.core.io.nifti import save_nifti
    from napari_segxai.core.training.synth import generate_case

    case = generate_case(1100, size="toy").case
    folder = tmp_path / "case"
    folder.mkdir()
    for name, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"toy_{name}.nii.gz")
    return folder


def _bundle_run(bundle, case_dir) -> np.ndarray:
    """The bundle's own preprocessing, network, inferer and activation, through monai.bundle (probabilities)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    files = [str(case_dir / f"toy_{m}.nii.gz") for m in ("t1ce", "t1", "t2", "flair")]  # channel_def order
    data = parser.get_parsed_content("preprocessing")({"image": files})
    with torch.no_grad():
        logits = parser.get_parsed_content("inferer")(data["image"][None], network)
    return torch.softmax(logits[0], 0).numpy()


def test_bundle_card_is_read_from_the_config_and_metadata(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    card = load_model_card(bundle)
    assert card.architecture == "UNet" and card.kwargs["channels"] == [8, 16, 32]
    assert card.modalities == ("t1ce", "t1", "t2", "flair")
    assert card.class_names == ("background", "necrosis", "edema", "enhancing") and card.activation == "softmax"
    assert card.roi_size == (24, 24, 24) and card.overlap == 0.5 and card.mode == "gaussian"
    assert card.normalization == "zscore_nonzero" and card.spacing is None


def test_bundle_segment_equals_the_bundle_run(tmp_path, toy_case_dir):
    import nibabel as nib

    bundle = write_bundle(tmp_path / "bundle")
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.inference import outside_head, remove_outside_head

    expected = _bundle_run(bundle, toy_case_dir)
    card = load_model_card(bundle)  # the bundle's run, then segment()'s documented last step: no labels outside the head
    expected_labels = np.asarray(card.label_values)[expected.argmax(0)]
    remove_outside_head(expected, expected_labels, outside_head(load_case(toy_case_dir), card), card)
    out = tmp_path / "out"
    assert main(["segment", str(toy_case_dir), "--model", str(bundle), "--out", str(out), "--device", "cpu"]) == 0
    probabilities = np.moveaxis(np.asarray(nib.load(next(out.glob("*_prob.nii.gz"))).dataobj), -1, 0)
    labels = np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    assert np.abs(probabilities - expected).max() <= 1e-3
    assert (labels == expected_labels).mean() >= 0.999


def test_bundle_explains_and_writes_its_card(tmp_path, toy_case_dir):
    bundle = write_bundle(tmp_path / "bundle")
    assert main(["explain", str(toy_case_dir), "--model", str(bundle), "--method", "saliency", "--classes",
                 "necrosis,edema,enhancing", "--target", "voxel", "16,16,16", "--out", str(tmp_path / "x")]) == 0
    assert main(["card", str(bundle), "--out", str(tmp_path / "card.yaml")]) == 0
    card = load_model_card(tmp_path / "card.yaml")
    assert card.architecture == "UNet" and card.weights == bundle / "models" / "model.pt"


def test_code_in_a_bundle_config_is_refused_until_trusted(tmp_path, toy_case_dir, capsys):
    config = inference_config(device="$torch.device('cpu')")
    bundle = write_bundle(tmp_path / "bundle", config=config)
    out = tmp_path / "out"
    assert main(["segment", str(toy_case_dir), "--model", str(bundle), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds code" in err and "--trust-model" in err and not out.exists()
    assert main(["segment", str(toy_case_dir), "--model", str(bundle), "--trust-model", "--out", str(out)]) == 0
    foreign = inference_config(network_def={"_target_": "os.system", "command": "touch x"})
    with pytest.raises(ValueError, match="holds code"):
        load_model_card(write_bundle(tmp_path / "foreign", config=foreign))


def test_bad_bundles_get_one_sentence(tmp_path, capsys, toy_case_dir):
    bundle = write_bundle(tmp_path / "bundle")
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(ValueError, match="no models/model.pt"):
        load_model_card(bundle)
    bundle = write_bundle(tmp_path / "missing_ref", config=inference_config(inferer="@no_such_inferer"))
    with pytest.raises(ValueError, match="'inferer'.*cannot be resolved"):
        load_model_card(bundle)
    odd = inference_config()
    odd["preprocessing"]["transforms"].append({"_target_": "RandFlipd", "keys": "image", "prob": 0.5})
    with pytest.raises(ValueError, match="RandFlipd.*cannot express"):
        load_model_card(write_bundle(tmp_path / "odd", config=odd))
    meta = tmp_path / "nochannels"
    write_bundle(meta)
    raw = json.loads((meta / "configs" / "metadata.json").read_text())
    del raw["network_data_format"]["inputs"]["image"]["channel_def"]
    (meta / "configs" / "metadata.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="input sequences are unknown"):
        load_model_card(meta)
