"""``segxai influence`` and ``segxai influence-check`` on a toy model with hand-made checkpoints."""

from __future__ import annotations

import csv

import pytest

from _influence import blob_case, toy_model
from napari_segxai.cli import main


@pytest.fixture(scope="module")
def cases_cache(tmp_path_factory):
    """Regenerated training cases go to a temporary folder shared by this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGXAI_TRAINING_CASES", str(tmp_path_factory.mktemp("cases")))
        yield


@pytest.fixture
def setup(tmp_path, cases_cache):
    from napari_segxai.core.io.nifti import save_nifti

    card = toy_model(tmp_path / "toy")
    case = blob_case()
    folder = tmp_path / "case"
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"blobs_{modality}.nii.gz")
    return card, folder


def test_segxai_influence_writes_csv_and_contact_sheets(setup, tmp_path, capsys):
    card, folder = setup
    out = tmp_path / "out"
    assert main(["influence", str(folder), "--model", str(card), "--out", str(out), "--top", "3",
                 "--threshold", "0.0", "--class", "edema", "--class", "enhancing"]) == 0
    printed = capsys.readouterr().out
    assert "edema proponents:" in printed and "Contact sheet:" in printed
    (table,) = out.glob("*_influence.csv")
    stem = table.name[: -len("_influence.csv")]
    rows = list(csv.DictReader(table.open()))
    assert {r["test_class"] for r in rows} == {"edema", "enhancing"} and rows[0]["rank"]
    for name in ("edema", "enhancing"):
        sheet = out / f"{stem}_influence_{name}.png"
        assert sheet.stat().st_size > 5000 and sheet.read_bytes()[:4] == b"\x89PNG"
    assert not (out / f"{stem}_influence_necrosis.png").exists()


def test_segxai_influence_check_prints_the_similarity_table(setup, tmp_path, capsys):
    card, folder = setup
    out = tmp_path / "check"
    assert main(["influence-check", str(folder), "--model", str(card), "--out", str(out), "--threshold", "0.0",
                 "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert "Spearman" in printed and "proponents" in printed
    (plot,) = out.glob("*_similarity.png")
    assert plot.stat().st_size > 1000
    (table,) = out.glob("*_similarity.csv")
    assert "test_class,regions,spearman" in table.read_text()


def test_segxai_influence_without_training_record_is_one_sentence(tmp_path, capsys, setup):
    _, folder = setup
    bare = toy_model(tmp_path / "bare", training=False)
    assert main(["influence", str(folder), "--model", str(bare), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("segxai influence: error: This model has no recorded checkpoints; "
                           "train it with `segxai train` to record them.")


def test_tracin_of_the_uncertain_voxels_scores_only_the_part_of_each_region_inside_them(setup, tmp_path, capsys):
    import numpy as np

    from napari_segxai.core.influence import influence
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.loading import load_model_card

    card_path, folder = setup
    case, card = load_case(folder), load_model_card(card_path)
    whole = influence(case, card, threshold=0.0, engine="exact")
    half = np.zeros(case.shape, bool)
    half[: case.shape[0] // 2] = True
    inside = influence(case, card, threshold=0.0, engine="exact", within=half)
    assert np.all(inside.test_voxels <= whole.test_voxels) and inside.test_voxels.sum() < whole.test_voxels.sum()
    assert inside.test_voxels.sum() > 0

    out = tmp_path / "out"
    assert main(["influence", str(folder), "--model", str(card_path), "--out", str(out), "--threshold", "0.0",
                 "--uncertain", "0.0", "--class", "edema"]) == 0
    assert "Scoring the " in capsys.readouterr().out and list(out.glob("*_influence.csv"))


def test_segxai_influence_lists_evidence_whose_training_files_are_gone_without_its_tile(setup, tmp_path, capsys):
    """A training case's files gone (the index still holds its scores): listed, no tile, one note; a changed file is
    still refused."""
    import shutil

    from _influence import files_model
    from napari_segxai.core.influence import TrainingCaseUnavailable, training_case
    from napari_segxai.core.model.loading import load_model_card

    _, folder = setup
    card_path, data = files_model(tmp_path / "files", seeds=(61, 63))
    command = ["influence", str(folder), "--model", str(card_path), "--top", "2", "--class", "edema", "--out"]
    assert main(command + [str(tmp_path / "here")]) == 0  # builds the index with every file here
    listed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("edema proponents: "))
    gone = listed.split()[2]
    kept = next(n for n in ("synth-toy-00000061", "synth-toy-00000063") if n != gone)
    card = load_model_card(card_path)
    original = data / kept / f"{kept}_t1.nii.gz"
    saved = original.read_bytes()
    shutil.copyfile(data / kept / f"{kept}_t2.nii.gz", original)
    with pytest.raises(ValueError, match=f"{kept}/{kept}_t1.nii.gz changed since the model was trained") as changed:
        training_case(card, ("synth-toy-00000061", "synth-toy-00000063").index(kept))
    assert not isinstance(changed.value, TrainingCaseUnavailable)
    original.write_bytes(saved)
    shutil.rmtree(data / gone)

    assert main(command + [str(tmp_path / "away")]) == 0
    printed = capsys.readouterr().out
    assert listed in printed  # the same evidence, from the index
    assert printed.count("No picture:") == 1
    assert (f"No picture: {gone}'s files are not in {data.resolve()}, so that evidence is listed without one (its "
            "TracIn scores come from the index); if the dataset moved, give its folder with --training-data DIR (or "
            "training_data in the model card).\n") in printed
    assert list((tmp_path / "away").glob("*_influence_edema.png"))
