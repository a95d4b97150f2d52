"""TrainingRecorder: a training loop we do not own (plain PyTorch, MONAI's SupervisedTrainer) writes a
record and a card that TracIn uses with no other step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _datasets import write_nnunet_dataset
from napari_segxai import TrainingRecorder
from napari_segxai.core.influence import influence, training_case, training_record
from napari_segxai.core.model.loading import load_model_card

KWARGS = {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "channels": [4, 8], "strides": [2], "num_res_units": 0}
INFERENCE = {"roi_size": [16, 16, 16], "overlap": 0.25}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_nnunet_dataset(tmp_path_factory.mktemp("rec") / "Dataset002_Toy", (81, 82))


def _batches(root):
    """(image, label) crops of every case of the dataset, as a user's own loader would give them."""
    from napari_segxai.core.training.datasets import open_dataset

    data = open_dataset(root)
    out = []
    for entry in data.cases:
        case = data.load(entry)
        image = torch.from_numpy(case.channels[:, 8:24, 8:24, 8:24].copy())[None]
        label = torch.from_numpy(case.label[8:24, 8:24, 8:24].astype(np.int64))[None, None]
        out.append((image, label))
    return out


def test_a_plain_pytorch_loop_records_what_tracin_needs(dataset, tmp_path):
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    model = UNet(**KWARGS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    recorder = TrainingRecorder(tmp_path / "mine", dataset=dataset, architecture="UNet", kwargs=KWARGS,
                                name="my-unet", inference=INFERENCE)
    batches = _batches(dataset)
    lrs = []
    for step in range(1, 7):
        image, label = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = loss_fn(model(image), label)
        loss.backward()
        optimizer.step()
        recorder.update(loss)
        lrs.append(optimizer.param_groups[0]["lr"])
        if step % 2 == 0 and step < 6:
            recorder.checkpoint(model, optimizer, step)
        scheduler.step()
    card_path = recorder.finish(model, None, 6, lr=lrs[-1])

    manifest = json.loads((tmp_path / "mine" / "training" / "manifest.json").read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == [2, 4, 6]
    assert [c["lr"] for c in manifest["checkpoints"]] == pytest.approx([lrs[1], lrs[3], lrs[5]])
    assert lrs[1] != lrs[3]  # the scheduler moved the rate, and each checkpoint kept its own
    assert [c["name"] for c in manifest["training_set"]["cases"]] == ["BRATS_000", "BRATS_001"]
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training_format.md").read_text()
    assert all(f"`training_set.{key}`" in doc for key in manifest["training_set"]), manifest["training_set"].keys()
    card = load_model_card(card_path)
    assert card.name == "my-unet" and card.training is not None
    assert training_record(card).kind == "files"
    query = training_case(card, 1)
    result = influence(query, card, threshold=0.0)
    assert result.training_cases == ("BRATS_000", "BRATS_001")
    assert np.isfinite(result.scores).all()


def test_a_monai_supervised_trainer_records_through_its_events(dataset, tmp_path):
    from monai.engines import SupervisedTrainer
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(1)
    model = UNet(**KWARGS)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = [{"image": image, "label": label} for image, label in _batches(dataset)]
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=3, train_data_loader=loader, network=model,
                                optimizer=optimizer, loss_function=DiceCELoss(to_onehot_y=True, softmax=True))
    recorder = TrainingRecorder(tmp_path / "monai", dataset=dataset, architecture="UNet", kwargs=KWARGS,
                                inference=INFERENCE)
    recorder.attach(trainer, every=2)
    trainer.run()

    manifest = json.loads((tmp_path / "monai" / "training" / "manifest.json").read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == [2, 4, 6]
    assert all(c["lr"] == pytest.approx(0.01) for c in manifest["checkpoints"])
    assert len(manifest["loss_history"]) == 6
    card = load_model_card(tmp_path / "monai" / "card.yaml")
    assert influence(training_case(card, 0), card, threshold=0.0).training_cases == ("BRATS_000", "BRATS_001")


def test_the_recorder_refuses_what_tracin_could_not_use(dataset, tmp_path):
    with pytest.raises(ValueError, match="Training case nobody is not in the dataset"):
        TrainingRecorder(tmp_path / "a", dataset=dataset, architecture="UNet", kwargs=KWARGS, cases=["nobody"])
    with pytest.raises(ValueError, match="network has 3 output channels but the dataset has 4 labels"):
        TrainingRecorder(tmp_path / "b", dataset=dataset, architecture="UNet", kwargs={**KWARGS, "out_channels": 3})
    recorder = TrainingRecorder(tmp_path / "c", dataset=dataset, architecture="UNet", kwargs=KWARGS)
    with pytest.raises(ValueError, match="Give the optimizer or lr="):
        recorder.checkpoint(torch.nn.Linear(1, 1), None, 1)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        TrainingRecorder(tmp_path / "d", dataset=dataset, architecture="UNet", kwargs=KWARGS)
