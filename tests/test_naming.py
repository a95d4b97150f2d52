"""Modality and label names from file names across brain-MRI naming conventions."""

import pytest

from napari_segxai.core import naming


@pytest.mark.parametrize(
    "filename, modality",
    [
        # BraTS 2018-2021
        ("Brats18_CBICA_AAB_1_t1.nii.gz", "t1"),
        ("BraTS20_Training_001_t1ce.nii.gz", "t1ce"),
        ("BraTS2021_00000_t2.nii.gz", "t2"),
        ("BraTS2021_00000_flair.nii.gz", "flair"),
        # BraTS 2023+
        ("BraTS-GLI-00001-000-t1n.nii.gz", "t1"),
        ("BraTS-GLI-00001-000-t1c.nii.gz", "t1ce"),
        ("BraTS-GLI-00001-000-t2w.nii.gz", "t2"),
        ("BraTS-GLI-00001-000-t2f.nii.gz", "flair"),
        # BraTS-Toolkit
        ("TCGA-DU-7294_t1.nii.gz", "t1"),
        ("TCGA-DU-7294_t1c.nii.gz", "t1ce"),
        ("TCGA-DU-7294_t2.nii.gz", "t2"),
        ("TCGA-DU-7294_fla.nii.gz", "flair"),
        # plain names, any case, .nii too
        ("t1.nii.gz", "t1"),
        ("T1.nii", "t1"),
        ("T1POST.nii.gz", "t1ce"),
        ("t1_gd.nii.gz", "t1ce"),
        ("T1c.nii.gz", "t1ce"),
        ("t1-post.nii.gz", "t1ce"),
        ("FLAIR.nii.gz", "flair"),
        ("T2_FLAIR.nii.gz", "flair"),
        ("T2.nii.gz", "t2"),
        ("patient07_T2W.nii.gz", "t2"),
        # BIDS
        ("sub-01_T1w.nii.gz", "t1"),
        ("sub-01_ce-gadolinium_T1w.nii.gz", "t1ce"),
        ("sub-01_FLAIR.nii.gz", "flair"),
        # other contrasts keep their short name
        ("case_PD.nii.gz", "pd"),
    ],
)
def test_modality_from_name(filename, modality):
    assert naming.modality_from_name(filename) == modality
    assert not naming.is_label_name(filename)


@pytest.mark.parametrize(
    "filename",
    ["BraTS20_Training_001_seg.nii.gz", "BraTS-GLI-00001-000-seg.nii.gz", "label.nii.gz",
     "mask.nii.gz", "consensus_lesion_mask.nii.gz", "case_GT.nii", "Case_Segmentation.nii.gz"],
)
def test_label_names(filename):
    assert naming.is_label_name(filename)
    assert naming.modality_from_name(filename) is None


@pytest.mark.parametrize(
    "filename",
    ["pred_hnfnetv1-20.nii.gz", "fusion_mav.nii.gz", "fusion_simple.nii.gz", "pred_isen-20.nii.gz",
     "prediction_seg.nii.gz", "pred_t1.nii.gz", "brain_mask.nii.gz", "notes.nii.gz", "image.nii.gz"],
)
def test_algorithm_outputs_and_unknown_names_are_neither(filename):
    assert naming.modality_from_name(filename) is None
    assert not naming.is_label_name(filename)


def test_normalize_modality_and_order():
    assert naming.normalize_modality("T1Gd") == "t1ce"
    assert naming.normalize_modality(" Flair ") == "flair"
    assert naming.normalize_modality("Perfusion") == "perfusion"
    names = ["flair", "dwi", "t1ce", "adc", "t2", "t1"]
    assert sorted(names, key=naming.modality_sort_key) == ["t1", "t1ce", "t2", "flair", "adc", "dwi"]


def test_4d_names_from_file_name_or_position():
    assert naming.modalities_from_4d_name("case_t1_t1ce_t2_flair.nii.gz", 4) == ("t1", "t1ce", "t2", "flair")
    assert naming.modalities_from_4d_name("BRATS_001.nii.gz", 4) == ("channel0", "channel1", "channel2", "channel3")
    # a name listing the wrong number of modalities falls back to positions
    assert naming.modalities_from_4d_name("case_t1_t2.nii.gz", 3) == ("channel0", "channel1", "channel2")
