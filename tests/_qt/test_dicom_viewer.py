"""A DICOM study in the viewer: its labels saved as DICOM SEG over the study's images."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_segxai._reader import napari_get_reader


def _study(root):
    from _dicom import write_series

    rng = np.random.default_rng(0)
    for number, description in ((3, "T1 SE"), (4, "T1 SE POST GD"), (5, "T2 TSE"), (6, "FLAIR")):
        write_series(root / str(number), rng.integers(0, 500, (20, 24, 12)).astype(np.float32),
                     description=description, number=number, study_uid="1.2.3.4", orientation="axial HFP")
    return root


def test_a_labels_layer_of_a_dicom_study_saves_as_dicom_seg(npe2pm, tmp_path):
    import napari
    from npe2 import PluginManifest

    from napari_segxai._layers import Key, label_display
    from napari_segxai.core.io.dicom_write import read_seg

    npe2pm.register(PluginManifest.from_distribution("napari-segxai"))
    study = _study(tmp_path / "study")
    images = [Image(data, **kwargs) for data, kwargs, _ in napari_get_reader(str(study))(str(study))]
    labels = np.zeros(images[0].data.shape, np.int16)
    labels[4:9, 5:12, 2:6], labels[10:14, 3:8, 7:9] = 2, 4
    layer = Labels(labels, affine=images[0].affine, metadata=dict(images[0].metadata), name="study segmentation",
                   **label_display({0: ("background", None), 2: ("edema", "#3cb44b"), 4: ("enhancing", "#ffe119")}))
    paths = napari.save_layers(str(tmp_path / "seg.dcm"), [layer], plugin="napari-segxai")
    assert [str(p) for p in paths] == [str(tmp_path / "seg.dcm")]
    import pydicom

    seg = pydicom.dcmread(paths[0])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["edema", "enhancing"]
    reference = layer.metadata[Key.REFERENCE_FILES]
    assert all("/3/" in p for p in reference)  # the T1 series, whose grid the case is on
    from napari_segxai._layers import layer_world_affine

    back = read_seg(paths[0], reference, layer_world_affine(layer), classes=[(2, "edema", "#00ff00"),
                                                                               (4, "enhancing", "#ffff00")])
    np.testing.assert_array_equal(back, labels)


def test_a_labels_layer_of_a_nifti_case_is_refused_as_dicom_seg_with_a_sentence(tmp_path, monkeypatch):
    from napari_segxai import _writer

    said = []
    monkeypatch.setattr(_writer, "show_error", said.append)
    assert _writer.write_labels_dicom(str(tmp_path / "seg.dcm"), np.ones((4, 4, 4), np.int16),
                                      {"name": "x", "metadata": {}}) == []
    assert said and "does not belong to a case opened from a DICOM study" in said[0]
    assert not (tmp_path / "seg.dcm").exists()


def test_the_dicom_study_widget_shows_the_series_and_opens_the_chosen_ones(make_napari_viewer, qtbot, tmp_path,
                                                                             monkeypatch):
    from napari_segxai._qt import compute_widget

    messages = {"error": []}
    monkeypatch.setattr(compute_widget, "show_error", messages["error"].append)
    from _dicom import write_series

    from napari_segxai._layers import layer_world_affine
    from napari_segxai._qt.dicom_widget import NOT_USED, DicomStudyWidget
    from napari_segxai.core.io.dicom import read_series, read_study

    study = _study(tmp_path / "study")
    rng = np.random.default_rng(1)
    write_series(study / "11", rng.integers(0, 500, (16, 18, 10)).astype(np.float32), description="T2 BLADE cor",
                 number=11, study_uid="1.2.3.4", orientation="coronal")
    write_series(study / "1", rng.integers(0, 500, (20, 24, 2)).astype(np.float32), description="localizer",
                 number=1, study_uid="1.2.3.4")
    viewer = make_napari_viewer(show=True)
    widget = DicomStudyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DICOM study")
    widget.folder.setText(str(study))
    widget.read_study()
    table = [[widget.table.item(r, c).text() for c in range(4)] + [widget.table.cellWidget(r, 4).currentText()]
             for r in range(widget.table.rowCount())]
    assert table == [["3", "T1 SE", "axial", "12", "t1"], ["4", "T1 SE POST GD", "axial", "12", "t1ce"],
                     ["5", "T2 TSE", "axial", "12", "t2"], ["6", "FLAIR", "axial", "12", "flair"],
                     ["11", "T2 BLADE cor", "coronal", "10", "t2"]]
    assert "series 1 (localizer) left out" in widget.notes.text()

    widget.run_button.click()  # two series are t2: one sentence, nothing opened
    assert "Series 5 and 11 are both t2" in messages["error"][-1] and len(viewer.layers) == 0
    widget.table.cellWidget(2, 4).setCurrentText(NOT_USED)  # keep the coronal T2 and put the case on its grid
    widget.reference.setCurrentText("t2")
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert [layer.name for layer in viewer.layers] == ["t1", "t1ce", "t2", "flair"]
    _, affine = read_series(next(s for s in read_study(study).series if s.number == 11))
    for layer in viewer.layers:
        np.testing.assert_allclose(layer_world_affine(layer), affine, atol=1e-5)
        assert layer.data.shape == (16, 18, 10)
    assert "Opened study-" in widget.status.text()
    assert "t1 covers only 0% of the t2 series' field of view" in widget.notes.text()  # the axial stack lies beside it
    widget.grab().save(str(tmp_path / "dicom_widget.png"))  # the picture the user sees (looked at)
    import shutil

    shutil.copy(tmp_path / "dicom_widget.png", "/tmp/dicom_widget.png")


def test_a_dicom_study_segmented_in_the_viewer_lines_up_and_goes_back_as_dicom_seg(make_napari_viewer, qtbot,
                                                                                     npe2pm, tmp_path):
    """The full path: a prone (HFP) study opened, segmented with the demo model, saved as DICOM SEG, read back."""
    import napari
    from npe2 import PluginManifest

    from _viewer import open_case
    from napari_segxai._layers import Key, layer_world_affine
    from napari_segxai._qt.segment_widget import SegmentWidget
    from napari_segxai.core.io.dicom import read_series, read_study
    from napari_segxai.core.io.dicom_write import read_seg

    npe2pm.register(PluginManifest.from_distribution("napari-segxai"))
    study = _study(tmp_path / "study")
    viewer = make_napari_viewer()
    open_case(viewer, study)
    widget = SegmentWidget(viewer)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    segmentation = viewer.layers[-1]
    assert isinstance(segmentation, Labels) and segmentation.name.endswith("segmentation")
    _, t1_affine = read_series(next(s for s in read_study(study).series if s.number == 3))
    np.testing.assert_allclose(layer_world_affine(segmentation), t1_affine, atol=1e-5)
    assert segmentation.metadata[Key.REFERENCE_FILES]
    (path,) = napari.save_layers(str(tmp_path / "seg.dcm"), [segmentation], plugin="napari-segxai")
    from napari_segxai.core.model.card import default_model_card

    back = read_seg(path, segmentation.metadata[Key.REFERENCE_FILES], t1_affine, classes=default_model_card().classes)
    np.testing.assert_array_equal(back, segmentation.data)


def test_a_relevance_layer_of_a_dicom_study_saves_as_a_parametric_map(npe2pm, tmp_path):
    import napari
    from npe2 import PluginManifest

    from napari_segxai._layers import Key, layer_world_affine
    from napari_segxai._qt.explain_display import relevance_layer_data
    from napari_segxai.core.attribution import explain_case
    from napari_segxai.core.io.dicom_write import read_parametric_map
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import default_model_card

    npe2pm.register(PluginManifest.from_distribution("napari-segxai"))
    case = load_case(_study(tmp_path / "study"))
    result = explain_case(case, default_model_card(), classes=["edema"], target="voxel", voxel=(10, 12, 6),
                          device="cpu")
    data, kwargs, _ = relevance_layer_data(result, case)[3]  # edema on FLAIR, shown masked and thresholded
    layer = Image(data, **kwargs)
    (path,) = napari.save_layers(str(tmp_path / "map.dcm"), [layer], plugin="napari-segxai")
    back = read_parametric_map(path, layer.metadata[Key.REFERENCE_FILES], layer_world_affine(layer))
    np.testing.assert_allclose(back, result.relevance[0, 3], rtol=1e-6, atol=1e-9)  # the map as computed
    import pydicom

    assert "saliency, class edema, channel flair" in str(pydicom.dcmread(path).SeriesDescription)


def test_closing_the_viewer_while_a_study_opens_cancels_it_and_closes_cleanly(make_napari_viewer, qtbot, tmp_path):
    from napari_segxai._qt.dicom_widget import DicomStudyWidget

    study = _study(tmp_path / "study")
    viewer = make_napari_viewer(show=True)
    widget = DicomStudyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DICOM study")
    widget.folder.setText(str(study))
    widget.read_study()
    widget.run_button.click()
    assert widget.jobs.running
    viewer.close()
    assert not widget.jobs.running
