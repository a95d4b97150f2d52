"""A DICOM study as a whole: misregistered series reported, converted to NIfTI, no patient data in outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _dicom import ORIENTATIONS, write_series

pytest.importorskip("pydicom")

PHI = (b"Doe^Jane", b"PID-4711", b"19700101", b"ACC-0815")  # long enough not to occur by chance in base64


def phi_in(folder: Path) -> list[str]:
    """The files under ``folder`` whose bytes (decompressed when gzipped) hold the test study's patient data."""
    import gzip

    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        content = path.read_bytes()
        if path.suffix == ".gz":
            content = gzip.decompress(content)
        found += [f"{path.name}: {secret.decode()}" for secret in PHI if secret in content]
    return found


def _head(shape, orientation, spacing, origin, centre=(0.0, 0.0, 0.0), seed=0) -> np.ndarray:
    """A ball of tissue (radius 22 mm, brighter core) around ``centre`` (LPS mm) with faint noise outside."""
    row, column = (np.array(v, float) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, column)
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    lps = (np.array(origin)[:, None, None, None] + row[:, None, None, None] * i * spacing[0]
           + column[:, None, None, None] * j * spacing[1] + normal[:, None, None, None] * k * spacing[2])
    radius = np.linalg.norm(lps - np.array(centre)[:, None, None, None], axis=0)
    noise = np.random.default_rng(seed).uniform(0, 20, size=shape)
    return (np.where(radius < 22, 400 + 300 * (radius < 10), 0) + noise).astype(np.float32)


def head_study(root: Path, flair_centre=(0.0, 0.0, 0.0), contrast: bool = False) -> Path:
    """T1 (axial), T2 (coronal) and FLAIR (sagittal) series of one head (and T1 post-contrast with ``contrast``)."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    grids = {"t1_mprage_tra": ("axial HFS", (2.0, 2.0, 2.0), (-30.0, -30.0, -26.0), (30, 30, 26), 3, (0, 0, 0)),
             **({"t1_mprage_tra_post_gd": ("axial HFS", (2.0, 2.0, 2.0), (-30.0, -30.0, -26.0), (30, 30, 26), 4,
                                           (0, 0, 0))} if contrast else {}),
             "t2_tse_cor": ("coronal", (2.0, 2.5, 2.0), (-30.0, -28.0, 30.0), (30, 24, 28), 5, (0, 0, 0)),
             "t2_flair_sag": ("sagittal", (2.5, 2.0, 3.0), (27.0, -30.0, 30.0), (24, 30, 19), 9, flair_centre)}
    for description, (orientation, spacing, origin, shape, number, centre) in grids.items():
        write_series(root / description, _head(shape, orientation, spacing, origin, centre, seed=number),
                     orientation=orientation, spacing=spacing, origin=origin, description=description,
                     number=number, study_uid=study_uid)
    return root


def test_series_on_one_grid_agree_and_a_moved_series_is_reported(tmp_path):
    from napari_segxai.core.io.dicom_case import study_case

    case, agreements = study_case(head_study(tmp_path / "still"))
    assert case.modalities == ("t1", "t2", "flair")
    assert [a.modality for a in agreements] == ["t2", "flair"]
    assert all(a.dice > 0.9 and a.shift_mm < 2.0 and not a.misregistered for a in agreements), agreements
    assert not any("misregistered" in note for note in case.notes)
    assert case.reference_files and all(p.parent.name == "t1_mprage_tra" for p in case.reference_files)

    moved, agreements = study_case(head_study(tmp_path / "moved", flair_centre=(0.0, 9.0, 4.0)))
    flair = agreements[-1]
    assert flair.misregistered and 8.0 < flair.shift_mm < 11.0, flair
    assert any(note.startswith("flair vs t1: head masks overlap") and "may be misregistered" in note
               for note in moved.notes)

    on_flair, _ = study_case(head_study(tmp_path / "still"), reference="FLAIR")
    assert on_flair.shape == (24, 30, 19) and all(p.parent.name == "t2_flair_sag" for p in on_flair.reference_files)


def test_convert_writes_the_case_and_every_series_as_nifti_without_patient_data(tmp_path, capsys):
    import json

    import nibabel as nib

    from napari_segxai.cli import main
    from napari_segxai.core.io.dicom import read_series, read_study
    from napari_segxai.core.io.nifti import load_case

    study = head_study(tmp_path / "study")
    write_series(study / "dwi", _head((20, 20, 6), "axial HFS", (3.0, 3.0, 5.0), (-30.0, -30.0, -15.0)),
                 description="ep2d_diff_b1000", number=12)
    before = sorted((p, p.stat().st_mtime_ns) for p in study.rglob("*") if p.is_file())
    assert main(["convert", str(study), "--out", str(tmp_path / "out"), "--reference", "t2"]) == 0
    said = capsys.readouterr().out
    assert "series 12 (ep2d_diff_b1000) matches no modality" in said and "flair vs t2: head masks overlap" in said
    folder = next((tmp_path / "out").iterdir())
    assert folder.name.startswith("study-")
    case = load_case(folder)
    assert case.modalities == ("t1", "t2", "flair") and case.shape == (30, 24, 28)
    summary = json.loads((folder / "series.json").read_text())
    assert [(r["number"], r["modality"]) for r in summary["series"]] == [(3, "t1"), (5, "t2"), (9, "flair"), (12, None)]
    for item in read_study(study).series:  # each series as acquired: dcm2niix's grid and values
        volume, affine = read_series(item)
        written = nib.load(folder / "series" / f"series-{item.number}.nii.gz")
        np.testing.assert_allclose(written.affine, affine, atol=1e-4)
        np.testing.assert_allclose(np.asarray(written.dataobj), volume, atol=0.5)
    assert phi_in(folder) == []
    assert before == sorted((p, p.stat().st_mtime_ns) for p in study.rglob("*") if p.is_file())
    assert main(["convert", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    assert "No such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_no_output_carries_patient_data_unless_identifiers_are_asked_for(tmp_path, capfd):
    from napari_segxai.cli import main

    studies = tmp_path / "studies"
    for folder in ("Doe^Jane_PID-4711", "Doe^John_PID-4712"):  # PACS exports often name folders by patient
        head_study(studies / folder, contrast=True)
    study, out = studies / "Doe^Jane_PID-4711", tmp_path / "out"
    commands = [["segment", str(study), "--out", str(out / "segment")],
                ["explain", str(study), "--method", "saliency", "--out", str(out / "explain")],
                ["report", str(study), "--method", "saliency", "--no-influence", "--out", str(out / "report")],
                ["convert", str(study), "--out", str(out / "convert")],
                ["cohort", str(studies), "--method", "saliency", "--workers", "1", "--out", str(out / "cohort")]]
    for command in commands:
        assert main(command) == 0, command
    said = capfd.readouterr()
    assert phi_in(out) == []
    assert not any(secret.decode() in said.out + said.err for secret in PHI)
    assert [p.name[:6] for p in (out / "cohort" / "cases").iterdir()] == ["study-", "study-"]

    assert main(["report", str(study), "--method", "saliency", "--no-influence", "--show-identifiers",
                 "--out", str(out / "named")]) == 0
    page = (out / "named" / "report.html").read_text()
    assert "Doe^Jane" in page and "PID-4711" in page and "19700101" in page and "ACC-0815" in page


def test_segment_and_explain_write_dicom_seg_and_parametric_maps_over_the_reference_series(tmp_path, capsys):
    import pydicom

    from napari_segxai.cli import main
    from napari_segxai.core.io.dicom_case import study_case
    from napari_segxai.core.io.dicom_write import read_parametric_map, read_seg
    from napari_segxai.core.io.nifti import load_label

    study = head_study(tmp_path / "study", contrast=True)
    out = tmp_path / "out"
    assert main(["segment", str(study), "--format", "both", "--out", str(out)]) == 0
    assert main(["explain", str(study), "--format", "dicom", "--classes", "edema", "--out", str(out)]) == 0
    case, _ = study_case(study)
    seg_file = out / f"{case.name}_seg.dcm"
    seg = pydicom.dcmread(seg_file)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(case.reference_files[0]).SeriesInstanceUID
    labels = load_label(out / f"{case.name}_seg.nii.gz")[0]
    from napari_segxai.core.model.card import default_model_card

    np.testing.assert_array_equal(read_seg(seg_file, case.reference_files, case.affine,
                                           classes=default_model_card().classes), labels)
    maps = sorted(out.glob(f"{case.name}_saliency_edema_*.dcm"))
    assert [p.name.rsplit("_", 1)[1] for p in maps] == ["flair.dcm", "t1.dcm", "t1ce.dcm", "t2.dcm"]
    assert "saliency, class edema, channel flair" in str(pydicom.dcmread(maps[0]).SeriesDescription)
    assert np.isfinite(read_parametric_map(maps[0], case.reference_files, case.affine)).all()
    assert not list(out.glob("*saliency_edema.nii.gz"))  # dicom only: no NIfTI maps
    capsys.readouterr()
    assert main(["convert", str(study), "--out", str(tmp_path / "nifti")]) == 0
    nifti_case = tmp_path / "nifti" / case.name
    assert main(["segment", str(nifti_case), "--format", "dicom", "--out", str(tmp_path / "o2")]) == 2
    assert "was not opened from a DICOM study" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_a_series_mixing_orientations_becomes_one_stack_per_plane_and_a_stray_slice_is_left_out(tmp_path):
    import pydicom

    from napari_segxai.core.io.dicom import DicomError, read_study
    from napari_segxai.core.io.dicom_case import study_case

    root = tmp_path / "study"
    write_series(root / "ax", _head((30, 30, 8), "axial HFS", (2.0, 2.0, 4.0), (-30.0, -30.0, -16.0)),
                 description="t1_tse", number=3, study_uid="1.2.3")
    write_series(root / "cor", _head((30, 26, 6), "coronal", (2.0, 2.0, 5.0), (-30.0, -15.0, 26.0)),
                 description="t1_tse", number=3, study_uid="1.2.3", orientation="coronal")
    write_series(root / "stray", _head((30, 30, 1), "sagittal", (2.0, 2.0, 2.0), (0.0, -30.0, 30.0)),
                 description="t1_tse", number=3, study_uid="1.2.3", orientation="sagittal")
    uid = pydicom.dcmread(next((root / "ax").iterdir())).SeriesInstanceUID
    for folder in ("cor", "stray"):  # one SeriesInstanceUID holding three orientations
        for path in (root / folder).iterdir():
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = uid
            ds.save_as(path, enforce_file_format=True)
    study = read_study(root)
    assert [s.label for s in study.series] == ["series 3.axial (t1_tse axial stack)", "series 3.coronal (t1_tse coronal stack)"]
    assert study.notes == ("series 3.sagittal (t1_tse sagittal stack) left out (1 slice: a localiser or derived image).",)
    with pytest.raises(DicomError, match=r"Several series could be t1: series 3.axial .*; series 3.coronal .*"
                                         r"--series t1=3.axial"):
        study_case(root)
    case, _ = study_case(root, series={"t1": "3.coronal"})
    assert case.shape == (30, 26, 6)
