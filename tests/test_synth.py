"""Synthetic cases: determinism by seed, nested compartments, recorded modality signatures, case folders, ``segxai synth``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_segxai.cli import main
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.training.synth import COMPARTMENTS, DEMO_SEED, MODALITIES, generate_case
from napari_segxai.core.io.generated_cases import load_synth_case, read_ground_truth, write_case

FULL_SEEDS = (1, 4, 8)  # full-size cases (about 2 s each): a non-enhancing core, a solid one, a rim round a large necrosis
NECROSIS_MIN_VOXELS = 300  # below this, partial volume with the rim dominates the necrosis contrast


@pytest.fixture(scope="module")
def full_cases():
    return {seed: generate_case(seed) for seed in FULL_SEEDS}


def _signature(channels: np.ndarray, label: np.ndarray) -> dict[str, dict[str, float]]:
    """(class mean - tumour-free brain mean) / tumour-free brain SD, computed here independently."""
    brain = np.any(channels != 0, axis=0)
    normal = brain & (label == 0)
    out = {}
    for value, name in COMPARTMENTS.items():
        if np.any(label == value):
            out[name] = {m: (c[label == value].mean() - c[normal].mean()) / c[normal].std() for m, c in zip(MODALITIES, channels)}
    return out


def test_same_seed_same_case_other_seed_other_case():
    a, b, c = generate_case(3, size="toy"), generate_case(3, size="toy"), generate_case(4, size="toy")
    np.testing.assert_array_equal(a.case.channels, b.case.channels)
    np.testing.assert_array_equal(a.case.label, b.case.label)
    assert a.params == b.params and a.modality_signature == b.modality_signature
    assert a.case.channels.shape == (4, 32, 32, 32) and a.case.channels.dtype == np.float32
    assert not np.array_equal(a.case.label, c.case.label)
    assert a.params["tumour_centre_mm"] != c.params["tumour_centre_mm"]
    assert a.params["contrasts"] != c.params["contrasts"]


def test_full_case_is_the_2mm_template_grid(full_cases):
    case = full_cases[FULL_SEEDS[0]].case
    assert case.shape == (99, 117, 95)
    np.testing.assert_allclose(case.spacing, (2.0, 2.0, 2.0))
    assert case.modalities == MODALITIES and case.label_scheme.name == "brats-1/2/4"
    assert set(np.unique(case.label)) <= {0, 1, 2, 4}
    brain = np.any(case.channels != 0, axis=0)
    assert 150_000 < brain.sum() < 300_000  # a brain of 1.2-2.4 litres at 8 mm^3 per voxel
    for channel in case.channels:  # z-scored over the brain
        assert abs(channel[brain].mean()) < 1e-3 and abs(channel[brain].std() - 1) < 1e-3


@pytest.mark.parametrize("seed", range(8))
def test_compartments_are_nested(seed):
    synth = generate_case(seed, size="toy")
    label, core_type = synth.case.label, synth.params["core_type"]
    necrosis, core = label == 1, np.isin(label, (1, 4))
    assert core.any() and np.any(label == 2)
    if core_type == "rim":  # necrosis touches only the enhancing rim (or itself): the rim encloses it
        assert set(np.unique(label[ndimage.binary_dilation(necrosis)])) <= {1, 4}
    elif core_type == "solid":
        assert not necrosis.any()
    else:  # non-enhancing: the whole core is label 1
        assert not np.any(label == 4) and necrosis.any()
    # Around the core lies oedema (except where the core meets CSF or the brain's edge).
    shell = ndimage.binary_dilation(core) & ~core
    assert np.mean(label[shell] == 2) > 0.75
    # Oedema is not a separate blob: every oedema component touches the core or lies next to another voxel of it.
    components, n = ndimage.label(label == 2)
    touching = np.unique(components[ndimage.binary_dilation(core, iterations=2)])
    sizes = np.bincount(components.ravel())
    assert sizes[np.setdiff1d(np.arange(1, n + 1), touching)].sum() <= 0.2 * sizes[1:].sum()


@pytest.mark.parametrize("seed", FULL_SEEDS)
def test_recorded_signature_is_what_the_images_show(full_cases, seed):
    synth = full_cases[seed]
    measured = _signature(synth.case.channels, synth.case.label)
    assert set(synth.modality_signature) == set(measured)
    for name, values in measured.items():
        for modality, value in values.items():
            assert synth.modality_signature[name][modality] == pytest.approx(value, abs=2e-3)


@pytest.mark.parametrize("seed", FULL_SEEDS)
def test_contrasts_go_the_intended_way(full_cases, seed):
    synth = full_cases[seed]
    ch = dict(zip(synth.case.modalities, synth.case.channels))
    label, sig = synth.case.label, synth.modality_signature
    brain = np.any(synth.case.channels != 0, axis=0)
    normal = brain & (label == 0)
    white_matter = normal & (ch["t1"] > np.percentile(ch["t1"][normal], 70))  # white matter is brightest on T1
    edema = label == 2
    # Oedema: brighter on FLAIR than normal white matter (weakly in some cases, as per-case contrasts
    # vary by up to 40%), shows mainly on FLAIR and T2.
    assert ch["flair"][edema].mean() - ch["flair"][white_matter].mean() > 0.5
    assert ch["t1ce"][edema].mean() - ch["t1ce"][white_matter].mean() < 0.5
    assert sig["edema"]["flair"] > 0.3 and sig["edema"]["t2"] > 0.0
    assert max(sig["edema"]["flair"], sig["edema"]["t2"]) > max(abs(sig["edema"]["t1"]), abs(sig["edema"]["t1ce"])) + 0.5
    core_type = synth.params["core_type"]
    if "enhancing" in sig:  # enhancing tumour: bright on T1ce, brighter there than oedema
        assert sig["enhancing"]["t1ce"] > 0.5  # (1.35 on TCGA-FG-6692)
        assert sig["enhancing"]["t1ce"] > sig["edema"]["t1ce"] + 0.5
    else:
        assert core_type == "non-enhancing"
    # Necrosis and non-enhancing tumour: dark on T1ce (darker than any rim), bright on T2.
    if synth.params["voxels"]["necrosis"] >= NECROSIS_MIN_VOXELS:
        assert sig["necrosis"]["t1ce"] < (sig["enhancing"]["t1ce"] - 1.5 if "enhancing" in sig else 0.0)
        assert sig["necrosis"]["t2"] > 1.0
    else:
        assert core_type == "solid"  # the chosen seeds: only a solid core has no sizeable necrosis


def test_written_folder_reopens_as_a_brats_case(tmp_path):
    synth = generate_case(7, size="toy")
    folder = write_case(synth, tmp_path / "cases" / synth.case.name)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{synth.case.name}_{m}.nii.gz" for m in MODALITIES] + [f"{synth.case.name}_seg.nii.gz", "ground_truth.json"])
    case = load_case(folder)
    assert case.modalities == ("t1", "t1ce", "t2", "flair")
    assert case.label_scheme is not None and case.label_scheme.name == "brats-1/2/4"
    np.testing.assert_array_equal(case.label, synth.case.label)
    np.testing.assert_allclose(case.channels, synth.case.channels, atol=1e-6)
    np.testing.assert_allclose(case.affine, synth.case.affine)
    truth = read_ground_truth(folder)
    assert truth["seed"] == 7 and truth["labels"] == {"1": "necrosis", "2": "edema", "4": "enhancing"}
    reread = load_synth_case(folder)
    measured = _signature(reread.case.channels, reread.case.label)
    for name, values in reread.modality_signature.items():
        assert values == pytest.approx(measured[name], abs=2e-3)
    assert reread.params == json.loads(json.dumps(synth.params))


def test_write_case_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_case(generate_case(0, size="toy"), tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary folder left behind


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="size"):
        generate_case(0, size="huge")
    with pytest.raises(ValueError, match="non-negative"):
        generate_case(-1)


def test_demo_seed_is_not_a_small_seed():
    assert DEMO_SEED > 100_000  # training seeds start at 1000 and the demo case stays out of them


def test_segxai_synth_writes_cases(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--seed", "11", "--count", "2", "--size", "toy", "--out", str(out)]) == 0
    folders = sorted(out.iterdir())
    assert [f.name for f in folders] == ["synth-toy-00000011", "synth-toy-00000012"]
    printed = capsys.readouterr().out.split()
    assert [str(f) for f in folders] == [line for line in printed if line.startswith(str(out))]
    case = load_case(folders[1])
    np.testing.assert_array_equal(case.label, generate_case(12, size="toy").case.label)
    assert main(["synth", "--count", "0", "--out", str(out)]) == 2
    assert "--count must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("seed", (0, DEMO_SEED))  # 0 has nearly the weakest fluid suppression on FLAIR
def test_csf_is_dark_on_t1_and_flair_and_bright_on_t2_against_white_matter(seed, monkeypatch):
    """Relative tissue contrasts, on the tissue maps the case's anatomy was sampled from."""
    from napari_segxai.core.training import synth

    anatomy, sampled = synth._anatomy("full"), {}
    resample = ndimage.map_coordinates

    def recording(volume, *args, **kwargs):
        sampled[id(volume)] = out = resample(volume, *args, **kwargs)
        return out

    monkeypatch.setattr(synth.ndimage, "map_coordinates", recording)
    case = generate_case(seed).case
    mask, grey, white = (sampled[id(getattr(anatomy, name))] for name in ("mask", "gm", "wm"))
    csf = np.clip(mask - grey - white, 0, 1)
    tumour_free = (mask > 0.5) & ~ndimage.binary_dilation(case.label > 0, iterations=3)
    pure_csf, pure_white = tumour_free & (csf > 0.9), tumour_free & (white > 0.9)
    assert pure_csf.sum() > 300 and pure_white.sum() > 10_000
    difference = {m: float(c[pure_csf].mean() - c[pure_white].mean()) for m, c in zip(case.modalities, case.channels)}
    assert difference["t1"] < -1.5 and difference["flair"] < -0.3 and difference["t2"] > 1.5, difference


def test_without_thick_slices_only_the_blur_across_slices_is_left_out():
    """Seed 3 draws thick slices (blurred along axis 1): without them the label and every other draw are the
    same, and the channels are sharper across slices (the demo case is made so)."""
    drawn, thin = generate_case(3, size="toy"), generate_case(3, size="toy", thick_slices=False)
    assert drawn.params["thick_slice_axis"] == 1 and thin.params["thick_slice_axis"] is None
    assert {k: v for k, v in drawn.params.items() if not k.startswith("thick")} == \
        {k: v for k, v in thin.params.items() if not k.startswith("thick")}
    np.testing.assert_array_equal(drawn.case.label, thin.case.label)

    def across(channels):  # mean absolute difference between neighbouring slices along axis 1
        return float(np.abs(np.diff(channels, axis=2)).mean())

    assert across(thin.case.channels) > across(drawn.case.channels)   # the noise is added after the blur
