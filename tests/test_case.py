"""Opening cases from NIfTI files and writing NIfTI safely (core/case.py)."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from napari_segxai.core.case import BINARY, BRATS_123, BRATS_124, Case, label_scheme_for
from napari_segxai.core.io.nifti import load_case, load_label, save_nifti

CANONICAL = ("t1", "t1ce", "t2", "flair")
STYLES = ("brats2020", "brats2023", "plain", "toolkit")  # the naming styles of tiny_case_dir


# --------------------------------------------------------------------------- folders


@pytest.mark.parametrize("style", STYLES)
def test_folder_in_every_naming_convention(tiny_case_dir, style, tiny_label_maker):
    folder = tiny_case_dir(style=style)
    case = load_case(folder)
    assert case.modalities == CANONICAL
    assert case.channels.shape == (4, 16, 16, 16)
    assert case.channels.dtype == np.float32
    # channel i was written as (i + 1) * 100 + noise (+50 in the tumour): order is kept
    means = [float(np.median(case.channel(m))) for m in CANONICAL]
    assert means == sorted(means) and abs(means[0] - 100) < 10 and abs(means[3] - 400) < 10
    assert case.label is not None and case.label.dtype == np.int16
    np.testing.assert_array_equal(case.label, tiny_label_maker((16, 16, 16)))
    assert case.label_scheme == BRATS_124
    assert case.name == folder.name
    assert case.spacing == (1.0, 1.0, 1.0)
    assert case.shape == (16, 16, 16)
    assert len(case.source_paths) == 5 and all(p.parent == folder for p in case.source_paths)


def test_channel_order_is_canonical_whatever_the_file_order(tiny_case_dir):
    folder = tiny_case_dir(modalities=("flair", "t2", "t1"), label=False)
    case = load_case(folder)
    assert case.modalities == ("t1", "t2", "flair")
    # flair was written first (mean ~100), t1 last (mean ~300)
    assert abs(float(np.median(case.channel("flair"))) - 100) < 10
    assert abs(float(np.median(case.channel("T1"))) - 300) < 10
    assert case.label is None and case.label_scheme is None


def test_extra_modalities_follow_canonical_ones_alphabetically(tiny_case_dir):
    folder = tiny_case_dir(modalities=("pd", "flair", "adc", "t1"), label=False)
    assert load_case(folder).modalities == ("t1", "flair", "adc", "pd")


def test_algorithm_outputs_in_folder_are_ignored(tiny_case_dir, nifti_writer, tiny_label_maker):
    folder = tiny_case_dir(label=False)
    nifti_writer(tiny_label_maker().astype(np.uint8), np.eye(4), folder / "pred_net-20.nii.gz")
    nifti_writer(tiny_label_maker().astype(np.uint8), np.eye(4), folder / "fusion_mav.nii.gz")
    case = load_case(folder)
    assert case.modalities == CANONICAL
    assert case.label is None
    assert not any("pred" in p.name or "fusion" in p.name for p in case.source_paths)


def test_folder_without_modality_lists_its_files(tmp_path, nifti_writer):
    nifti_writer(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "image.nii.gz")
    nifti_writer(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp_path / "fusion_mav.nii.gz")
    with pytest.raises(ValueError, match=r"No file .* names a modality.*fusion_mav\.nii\.gz.*image\.nii\.gz"):
        load_case(tmp_path)


def test_duplicate_modality_names_both_files(tiny_case_dir, nifti_writer):
    folder = tiny_case_dir(label=False)
    nifti_writer(np.zeros((16, 16, 16), np.float32), np.eye(4), folder / "T1.nii.gz")
    with pytest.raises(ValueError, match=r"Both (Case001_t1\.nii\.gz and T1\.nii\.gz|T1\.nii\.gz and Case001_t1\.nii\.gz)"):
        load_case(folder)


def test_two_label_files_refused(tiny_case_dir, nifti_writer, tiny_label_maker):
    folder = tiny_case_dir()
    nifti_writer(tiny_label_maker().astype(np.uint8), np.eye(4), folder / "label.nii.gz")
    with pytest.raises(ValueError, match="several label files"):
        load_case(folder)


def test_mismatched_shape_names_files(tiny_case_dir, nifti_writer):
    folder = tiny_case_dir(label=False)
    nifti_writer(np.zeros((16, 16, 15), np.float32), np.eye(4), folder / "Case001_t2.nii.gz")
    with pytest.raises(ValueError, match=r"Case001_t2\.nii\.gz has shape \(16, 16, 15\) but Case001_t1\.nii\.gz has \(16, 16, 16\)"):
        load_case(folder)


def test_mismatched_affine_names_files_and_difference(tiny_case_dir, nifti_writer):
    folder = tiny_case_dir(label=False)
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    nifti_writer(np.zeros((16, 16, 16), np.float32), shifted, folder / "Case001_flair.nii.gz")
    with pytest.raises(ValueError, match=r"Case001_flair\.nii\.gz and Case001_t1\.nii\.gz have affines differing by up to 0\.5 mm"):
        load_case(folder)


def test_affine_within_tolerance_is_accepted(tiny_case_dir, nifti_writer):
    folder = tiny_case_dir(label=False)
    nudged = np.eye(4)
    nudged[0, 3] = 2e-4
    nifti_writer(np.zeros((16, 16, 16), np.float32), nudged, folder / "Case001_flair.nii.gz")
    assert load_case(folder).modalities == CANONICAL


def test_label_on_another_grid_refused(tiny_case_dir, nifti_writer):
    folder = tiny_case_dir(label=False)
    nifti_writer(np.zeros((8, 8, 8), np.uint8), np.eye(4), folder / "Case001_seg.nii.gz")
    with pytest.raises(ValueError, match=r"Case001_seg\.nii\.gz has shape"):
        load_case(folder)


# --------------------------------------------------------------------------- single files


def test_single_3d_file(tiny_case_dir):
    folder = tiny_case_dir(label=False)
    case = load_case(folder / "Case001_t1ce.nii.gz")
    assert case.modalities == ("t1ce",)
    assert case.channels.shape == (1, 16, 16, 16)
    assert case.name == "Case001_t1ce"
    assert case.label is None


def test_single_file_with_unknown_name_uses_lowercased_stem(tmp_path, nifti_writer):
    nifti_writer(np.ones((5, 6, 7), np.int16), np.eye(4), tmp_path / "MyScan.nii")
    case = load_case(tmp_path / "MyScan.nii")
    assert case.modalities == ("myscan",)
    assert case.channels.dtype == np.float32 and case.shape == (5, 6, 7)


def test_4d_file_channels_by_position(tmp_path, nifti_writer):
    data = np.stack([np.full((6, 7, 8), v, np.float32) for v in (1, 2, 3)], axis=-1)
    nifti_writer(data, np.diag([2.0, 2.0, 3.0, 1.0]), tmp_path / "BRATS_001.nii.gz")
    case = load_case(tmp_path / "BRATS_001.nii.gz")
    assert case.modalities == ("channel0", "channel1", "channel2")
    assert case.channels.shape == (3, 6, 7, 8)
    assert [float(case.channels[i].mean()) for i in range(3)] == [1.0, 2.0, 3.0]
    assert case.spacing == (2.0, 2.0, 3.0)


def test_4d_file_channels_named_by_file_name(tmp_path, nifti_writer):
    data = np.stack([np.full((4, 4, 4), v, np.float32) for v in (1, 2)], axis=-1)
    nifti_writer(data, np.eye(4), tmp_path / "case_flair_t1c.nii.gz")
    case = load_case(tmp_path / "case_flair_t1c.nii.gz")
    assert case.modalities == ("flair", "t1ce")
    assert float(case.channel("flair").mean()) == 1.0


def test_trailing_singleton_axis_is_3d(tmp_path, nifti_writer):
    nifti_writer(np.ones((4, 5, 6, 1), np.float32), np.eye(4), tmp_path / "t2.nii.gz")
    case = load_case(tmp_path / "t2.nii.gz")
    assert case.channels.shape == (1, 4, 5, 6) and case.modalities == ("t2",)


def test_2d_image_refused(tmp_path, nifti_writer):
    nifti_writer(np.ones((4, 5), np.float32), np.eye(4), tmp_path / "t1.nii.gz")
    with pytest.raises(ValueError, match="2D .* give a 3D or 4D NIfTI"):
        load_case(tmp_path / "t1.nii.gz")


# --------------------------------------------------------------------------- bad files


def test_nan_refused_with_count(tmp_path, nifti_writer):
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    nifti_writer(data, np.eye(4), tmp_path / "flair.nii.gz")
    with pytest.raises(ValueError, match=r"flair\.nii\.gz holds 4 NaN or infinite voxels"):
        load_case(tmp_path / "flair.nii.gz")


def test_truncated_file_refused_naming_it(tmp_path, nifti_writer):
    good = nifti_writer(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32),
                       np.eye(4), tmp_path / "good_t1.nii.gz")
    raw = gzip.decompress(good.read_bytes())
    bad = tmp_path / "bad_t1.nii.gz"
    bad.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(ValueError, match=r"bad_t1\.nii\.gz"):
        load_case(bad)


def test_garbage_file_refused_naming_it(tmp_path):
    bad = tmp_path / "junk_t1.nii"
    bad.write_bytes(b"not a nifti file at all" * 10)
    with pytest.raises(ValueError, match=r"junk_t1\.nii"):
        load_case(bad)


def test_absurd_header_refused_before_allocating(tmp_path, nifti_writer):
    path = nifti_writer(np.zeros((2, 2, 2), np.float32), np.eye(4), tmp_path / "t1.nii")
    raw = bytearray(path.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    hdr.set_data_shape((30000, 30000, 30000))
    raw[:348] = hdr.binaryblock
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="header is probably corrupt"):
        load_case(path)


def _header_only(tmp_path, shape, dtype=np.float32):
    """A .nii whose header declares ``shape`` with a few bytes of data behind it."""
    path = tmp_path / "big_t1.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), dtype), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    hdr.set_data_shape(shape)
    raw[:348] = hdr.binaryblock
    path.write_bytes(bytes(raw))
    return path


def test_a_valid_image_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    from napari_segxai.core import memory

    # 2000^3 float32: the 32 GB of voxels, a 8 GB finite mask and the 32 GB float32 copy.
    path = _header_only(tmp_path, (2000, 2000, 2000))
    monkeypatch.setattr(memory, "available_ram", lambda: 16 * 10**9)
    with pytest.raises(ValueError) as refused:
        load_case(path)
    message = str(refused.value)
    print(f"\n{message}")
    assert message == (
        f"{path} (2000 x 2000 x 2000 voxels of float32) needs about 72 GB of memory but only 16 GB is "
        "available; crop or downsample the image first, or use a machine with more memory."
    )
    monkeypatch.undo()
    # Against the memory really free here: 4000^3 float32 (576 GB) fits no test machine.
    with pytest.raises(ValueError, match=r"needs about 576 GB of memory but only [\d.,]+ GB is available"):
        load_case(_header_only(tmp_path, (4000, 4000, 4000)))


def test_missing_and_non_nifti_paths(tmp_path):
    with pytest.raises(ValueError, match="No such file"):
        load_case(tmp_path / "nope.nii.gz")
    (tmp_path / "t1.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a NIfTI"):
        load_case(tmp_path / "t1.png")


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "values, scheme",
    [((0, 1, 2, 4), BRATS_124), ((0, 2, 4), BRATS_124), ((0, 1, 2, 3), BRATS_123), ((0, 3), BRATS_123),
     ((0, 1), BINARY), ((0,), BINARY)],
)
def test_label_schemes(values, scheme):
    assert label_scheme_for(values) == scheme


def test_label_scheme_tables_are_explicit():
    assert BRATS_124.classes == {0: "background", 1: "necrosis", 2: "edema", 4: "enhancing"}
    assert BRATS_123.classes == {0: "background", 1: "necrosis", 2: "edema", 3: "enhancing"}
    assert BINARY.classes == {0: "background", 1: "lesion"}


def test_unknown_label_scheme_names_values():
    scheme = label_scheme_for([0, 5, 7])
    assert scheme.name == "unknown"
    assert scheme.classes == {0: "background", 5: "label 5", 7: "label 7"}


def test_folder_with_123_labels(tiny_case_dir, tiny_label_maker):
    folder = tiny_case_dir(label=tiny_label_maker(values=(1, 2, 3)))
    assert load_case(folder).label_scheme == BRATS_123


def test_float_label_with_fractions_refused(tiny_case_dir, nifti_writer):
    folder = tiny_case_dir(label=False)
    nifti_writer(np.full((16, 16, 16), 0.5, np.float32), np.eye(4), folder / "Case001_seg.nii.gz")
    with pytest.raises(ValueError, match="non-integer"):
        load_case(folder)


# --------------------------------------------------------------------------- orientation


def _oblique_affine():
    a, b = np.deg2rad(20), np.deg2rad(-12)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([1.2, 0.9, 2.0])
    aff[:3, 3] = [-30.5, 12.25, 7.0]
    return aff


ORIENTATIONS = {
    "RAS": (np.diag([1.0, 1.0, 1.0, 1.0]), ("R", "A", "S")),
    "LPS": (np.array([[-1.0, 0, 0, 15], [0, -1, 0, 15], [0, 0, 1, -3], [0, 0, 0, 1]]), ("L", "P", "S")),
    "LAS": (np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]]), ("L", "A", "S")),
    "oblique": (_oblique_affine(), None),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_marked_voxel_keeps_its_world_position(tiny_case_dir, orientation, nifti_writer):
    affine, codes = ORIENTATIONS[orientation]
    shape = (12, 14, 16)
    marked = (2, 9, 13)
    folder = tiny_case_dir(shape=shape, affine=affine, label=False)
    for p in folder.iterdir():
        img = nib.load(str(p))
        data = np.asarray(img.dataobj).copy()
        data[marked] = 10_000
        nifti_writer(data, affine, p)
    case = load_case(folder)
    np.testing.assert_allclose(case.affine, affine, atol=1e-5)
    if codes is not None:
        assert nib.aff2axcodes(case.affine) == codes
    expected_world = affine @ np.array([*marked, 1.0])
    for c in range(case.channels.shape[0]):
        found = np.unravel_index(np.argmax(case.channels[c]), case.shape)
        np.testing.assert_allclose(case.affine @ np.array([*found, 1.0]), expected_world, atol=1e-4)
    np.testing.assert_allclose(case.spacing, np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-6)


def test_sform_wins_over_qform(tmp_path):
    sform = _oblique_affine()
    qform = np.diag([3.0, 3.0, 3.0, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    nib.save(img, str(tmp_path / "t1.nii.gz"))
    np.testing.assert_allclose(load_case(tmp_path / "t1.nii.gz").affine, sform, atol=1e-5)


def test_qform_used_when_sform_unset(tmp_path):
    qform = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), None)
    img.set_qform(qform, code=1)
    img.set_sform(np.eye(4), code=0)
    nib.save(img, str(tmp_path / "t1.nii.gz"))
    np.testing.assert_allclose(load_case(tmp_path / "t1.nii.gz").affine, qform, atol=1e-5)


# --------------------------------------------------------------------------- Case


def test_case_validates_its_fields():
    channels = np.zeros((2, 3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="2 channels but 1 modality"):
        Case(channels, ("t1",), np.eye(4))
    with pytest.raises(ValueError, match="label shape"):
        Case(channels, ("t1", "t2"), np.eye(4), label=np.zeros((3, 4, 4), np.int16))
    case = Case(channels, ["t1", "t2"], np.eye(4), source_paths=["a.nii"])
    assert case.modalities == ("t1", "t2") and case.shape == (3, 4, 5)
    with pytest.raises(ValueError, match="has no modality 'flair'; it has t1, t2"):
        case.channel("flair")


# --------------------------------------------------------------------------- save_nifti


def _affine():
    aff = _oblique_affine()
    aff[:3, :3] = np.diag([-1.5, 1.0, 2.0])
    return aff


@pytest.mark.parametrize(
    "array, dtype",
    [
        (np.arange(64, dtype=np.int64).reshape(4, 4, 4) % 5, np.uint8),
        (np.arange(64, dtype=np.int64).reshape(4, 4, 4) * 100 - 3000, np.int16),
        (np.ones((4, 4, 4), bool), np.uint8),
        (np.linspace(-1, 1, 64).reshape(4, 4, 4), np.float32),
        (np.linspace(-1, 1, 128).reshape(2, 4, 4, 4).astype(np.float16), np.float32),
    ],
)
def test_save_nifti_round_trip(tmp_path, array, dtype):
    out = save_nifti(array, _affine(), tmp_path / "deep" / "er" / "out.nii.gz")
    assert out == tmp_path / "deep" / "er" / "out.nii.gz"
    img = nib.load(str(out))
    assert img.get_data_dtype() == dtype
    np.testing.assert_allclose(np.asanyarray(img.dataobj), array.astype(dtype), rtol=1e-6)
    np.testing.assert_allclose(img.get_sform(), _affine(), atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), _affine(), atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.nii.gz"]


def test_save_nifti_uncompressed_and_overwrite(tmp_path):
    target = tmp_path / "x.nii"
    save_nifti(np.zeros((3, 3, 3), np.float32), np.eye(4), target)
    save_nifti(np.ones((3, 3, 3), np.float32), np.eye(4), target)
    assert target.read_bytes()[344:348] == b"n+1\x00"
    assert float(np.asanyarray(nib.load(str(target)).dataobj).mean()) == 1.0
    assert os.listdir(tmp_path) == ["x.nii"]


def test_save_nifti_refuses_protected_path(tiny_case_dir):
    folder = tiny_case_dir()
    case = load_case(folder)
    seg = folder / "Case001_seg.nii.gz"
    before = seg.read_bytes()
    for target in (seg, folder / "." / "Case001_seg.nii.gz"):
        with pytest.raises(ValueError, match="Refusing to overwrite .*Case001_seg.nii.gz"):
            save_nifti(np.zeros(case.shape, np.int16), case.affine, target, protected=case.source_paths)
    assert seg.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in case.source_paths)


def test_save_nifti_refuses_protected_path_through_symlink(tmp_path):
    src = save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), tmp_path / "t1.nii.gz")
    link = tmp_path / "link.nii.gz"
    link.symlink_to(src)
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        save_nifti(np.ones((2, 2, 2), np.float32), np.eye(4), link, protected=[src])


def test_save_nifti_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(OSError, match="disk full"):
        save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), target)
    assert list(tmp_path.iterdir()) == []


def test_save_nifti_keeps_old_file_until_new_one_is_complete(tmp_path, monkeypatch):
    target = save_nifti(np.full((2, 2, 2), 7.0, np.float32), np.eye(4), tmp_path / "out.nii.gz")
    seen = {}
    real_save = nib.save

    def spying_save(img, filename):
        seen["tmp"] = filename
        real_save(img, filename)
        seen["old_intact"] = float(np.asanyarray(nib.load(str(target)).dataobj).mean()) == 7.0

    monkeypatch.setattr(nib, "save", spying_save)
    save_nifti(np.full((2, 2, 2), 9.0, np.float32), np.eye(4), target)
    assert os.path.dirname(seen["tmp"]) == str(tmp_path) and seen["tmp"] != str(target)
    assert seen["old_intact"]
    assert float(np.asanyarray(nib.load(str(target)).dataobj).mean()) == 9.0
    assert os.listdir(tmp_path) == ["out.nii.gz"]


def test_save_nifti_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\.nii or \.nii\.gz"):
        save_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "out.png")
    with pytest.raises(ValueError, match="4x4"):
        save_nifti(np.zeros((2, 2, 2)), np.eye(3), tmp_path / "out.nii")


def test_saved_case_reloads_identically(tiny_case_dir, tmp_path):
    case = load_case(tiny_case_dir(affine=_affine()))
    out = tmp_path / "copy"
    for m in case.modalities:
        save_nifti(case.channel(m), case.affine, out / f"copy_{m}.nii.gz", protected=case.source_paths)
    save_nifti(case.label, case.affine, out / "copy_seg.nii.gz", protected=case.source_paths)
    again = load_case(out)
    assert again.modalities == case.modalities and again.label_scheme == case.label_scheme
    np.testing.assert_array_equal(again.channels, case.channels)
    np.testing.assert_array_equal(again.label, case.label)
    np.testing.assert_allclose(again.affine, case.affine, atol=1e-5)


# --------------------------------------------------------------------------- real data


REAL_CASES = {
    "TCGA-DU-7294": ((240, 240, 155), ("L", "P", "S"), False),
    "TCGA-FG-6692": ((240, 240, 155), ("L", "P", "S"), False),
    "BraTS-GLI-00001-000": ((240, 240, 155), ("L", "P", "S"), False),
    "open_ms_patient19": ((182, 218, 182), ("L", "A", "S"), True),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_CASES))
def test_real_cases_load(realdata, name):
    shape, codes, has_label = REAL_CASES[name]
    folder = realdata / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    case = load_case(folder)
    assert case.modalities == CANONICAL
    assert case.shape == shape and case.channels.shape == (4, *shape)
    assert case.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert nib.aff2axcodes(case.affine) == codes
    np.testing.assert_allclose(case.affine, nib.load(str(case.source_paths[0])).affine)
    assert all(float(np.abs(case.channels[i]).max()) > 0 for i in range(4))
    assert not any(p.name.startswith(("pred_", "fusion_")) for p in case.source_paths)
    if has_label:
        assert case.label_scheme == BINARY
        assert case.source_paths[-1].name == "consensus_lesion_mask.nii.gz"
        assert 0 < int(case.label.sum()) < case.label.size // 100
    else:
        assert case.label is None and case.label_scheme is None


@pytest.mark.slow
def test_real_ms_plain_names_map_to_files(realdata):
    folder = realdata / "open_ms_patient19"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    case = load_case(folder)
    assert [p.name for p in case.source_paths[:4]] == ["T1.nii.gz", "T1POST.nii.gz", "T2.nii.gz", "FLAIR.nii.gz"]
    flair = np.asanyarray(nib.load(str(folder / "FLAIR.nii.gz")).dataobj)
    np.testing.assert_array_equal(case.channel("flair"), flair.astype(np.float32))


@pytest.mark.slow
def test_real_fusion_file_is_a_brats_124_label_on_the_case_grid(realdata):
    folder = realdata / "TCGA-DU-7294"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    label, affine, scheme = load_label(folder / "fusion_mav.nii.gz")
    case = load_case(folder)
    assert scheme == BRATS_124
    assert set(np.unique(label)) <= {0, 1, 2, 4} and len(np.unique(label)) > 1
    assert label.shape == case.shape
    np.testing.assert_allclose(affine, case.affine)


def test_hidden_files_are_skipped(tiny_case_dir):
    folder = tiny_case_dir(label=False)
    (folder / "._Case001_t1.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".Case001_t2.abc.tmp.nii.gz").write_bytes(b"partial")
    assert load_case(folder).modalities == CANONICAL


def test_upper_case_extension(tmp_path, nifti_writer):
    nifti_writer(np.ones((3, 4, 5), np.float32), np.eye(4), tmp_path / "x.nii.gz")
    (tmp_path / "x.nii.gz").rename(tmp_path / "FLAIR.NII.GZ")
    case = load_case(tmp_path / "FLAIR.NII.GZ")
    assert case.modalities == ("flair",) and case.shape == (3, 4, 5)


def test_rgb_nifti_refused(tmp_path):
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "t1.nii.gz"))
    with pytest.raises(ValueError, match="colour or complex"):
        load_case(tmp_path / "t1.nii.gz")
