"""The Training evidence dock widget in a real napari viewer under Xvfb: query, thumbnails, opening a training case."""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_segxai._layers import layer_world_affine
from napari_segxai._qt.evidence_widget import ANY_CLASS, EVIDENCE_KEY, EvidenceWidget
from napari_segxai.core.influence import NoTrainingRecord, influence, training_case
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.training.synth import generate_case
from napari_segxai.core.io.generated_cases import write_case
from napari_segxai.core.thumbnails import thumbnail
from _viewer import open_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_train import TINY  # noqa: E402

TIMEOUT_MS = 120_000
QUERY_SEED = 7   # a toy case outside the training seeds (50..53)


def assert_same_evidence(shown, expected) -> None:
    """The same training regions in the same order; scores equal to float32 rounding (the widget's worker thread
    and this test reduce gradients in a different order)."""
    assert [dataclasses.replace(e, score=0.0) for e in shown] == [dataclasses.replace(e, score=0.0) for e in expected]
    np.testing.assert_allclose([e.score for e in shown], [e.score for e in expected], rtol=1e-5, atol=1e-9)


@pytest.fixture
def notices(notices, monkeypatch):
    """The shared notices fixture, also catching this widget's own notifications."""
    from napari_segxai._qt import evidence_widget

    for kind in ("error", "warning"):
        monkeypatch.setattr(evidence_widget, f"show_{kind}", notices[kind].append)
    return notices


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> Path:
    """A tiny UNet trained for 60 steps on four toy cases (about 10 s): it predicts tumour, with 5 checkpoints."""
    from napari_segxai.core.training.loop import train

    config = copy.deepcopy(TINY)
    config["kwargs"] = {"channels": [8, 16], "strides": [2], "num_res_units": 0}
    config["schedule"]["steps"] = 60
    config["crop"].update(per_step=2, tumour_fraction=0.9)
    return train(config, tmp_path_factory.mktemp("evidence") / "toy").card


@pytest.fixture
def toy_case(tmp_path) -> Path:
    """A generated toy case folder (32³) that the toy model was not trained on."""
    return write_case(generate_case(QUERY_SEED, size="toy"), tmp_path / f"synth-toy-{QUERY_SEED:08d}")


def _run(widget, qtbot):
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def _click(qtbot, strip, row):
    rect = strip.visualItemRect(strip.item(row))
    qtbot.mouseClick(strip.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def _array(pixmap) -> np.ndarray:
    """An (H, W, 3) uint8 array of a QPixmap."""
    from qtpy.QtGui import QImage

    image = pixmap.toImage().convertToFormat(QImage.Format.Format_RGB888)
    bits = image.constBits()
    bits.setsize(image.sizeInBytes())
    rows = np.frombuffer(bits, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def test_thumbnails_appear_and_a_click_opens_the_training_case_beside_the_case(
    make_napari_viewer, qtbot, toy_model, toy_case, notices
):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, toy_case)
    widget = EvidenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training evidence")
    case_name = f"synth-toy-{QUERY_SEED:08d}"
    assert widget.case_choice.currentText() == case_name
    widget.set_model_card(toy_model)
    assert widget.card_info.text() == ("tiny-trained: 4 training cases, 5 checkpoints. TracIn sums over 5 checkpoints "
                                       "along training.")
    assert [widget.test_class.itemText(i) for i in range(widget.test_class.count())] == ["necrosis", "edema", "enhancing"]
    assert widget.train_class.currentText() == ANY_CLASS
    assert widget.scoring.currentText() == "specific"
    widget.engine.setCurrentText("exact")  # specific needs the index: greyed out, the exact engine's default instead
    specific = widget.scoring.findText("specific")
    assert widget.scoring.currentText() == "relative" and not widget.scoring.model().item(specific).isEnabled()
    widget.test_class.setCurrentText("edema")
    widget.top.setValue(3)

    _run(widget, qtbot)
    assert notices["error"] == [] and notices["warning"] == []
    card = load_model_card(toy_model)
    from napari_segxai.core.io.nifti import load_case

    expected = influence(load_case(toy_case), card, engine="exact")
    proponents, opponents = expected.proponents("edema", top=3), expected.opponents("edema", top=3)
    assert proponents and opponents  # the toy model predicts oedema; some training regions help, some oppose
    assert_same_evidence(widget.proponents.evidences(), proponents)
    assert_same_evidence(widget.opponents.evidences(), opponents)
    first = widget.proponents.item(0).text()
    assert proponents[0].training_case in first and proponents[0].train_class in first
    assert f"{proponents[0].score:+.3g}" in first
    assert "TracIn (exact engine)" in widget.status.text()

    # Thumbnails replace the grey placeholders as they are drawn: the training case sliced through the region.
    qtbot.waitUntil(lambda: not widget.drawing, timeout=TIMEOUT_MS)
    for strip, items in ((widget.proponents, proponents), (widget.opponents, opponents)):
        for row, evidence in enumerate(items):
            assert strip.has_picture(row)
            shown = _array(strip.item(row).icon().pixmap(128, 128))
            tcase = training_case(card, evidence.seed)
            want = thumbnail(tcase, tcase.label, evidence.centroid, colors=card.classes,
                             highlight=card.classes[card.class_names.index(evidence.train_class)].label)
            np.testing.assert_array_equal(shown, want)

    # Another class pair re-ranks from the same query, without running again.
    widget.train_class.setCurrentText("enhancing")
    assert_same_evidence(widget.proponents.evidences(), expected.proponents("edema", "enhancing", top=3))
    widget.train_class.setCurrentText(ANY_CLASS)
    if expected.test_voxels[expected.test_classes.index("necrosis")] == 0:  # the toy model draws no necrosis
        widget.test_class.setCurrentText("necrosis")
        assert widget.proponents.count() == widget.opponents.count() == 0
        assert widget.status.text() == f"No proponents or opponents: {case_name} has no confident necrosis region."
    widget.test_class.setCurrentText("edema")
    assert_same_evidence(widget.proponents.evidences(), proponents)
    assert "TracIn (exact engine)" in widget.status.text()
    qtbot.waitUntil(lambda: not widget.drawing, timeout=TIMEOUT_MS)

    # A click opens that training case: its own affine, names prefixed with its id, beside the case in a grid.
    chosen = widget.proponents.evidence(0)
    _click(qtbot, widget.proponents, 0)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    tcase = training_case(card, chosen.seed)
    flair = viewer.layers[f"{chosen.training_case} flair"]
    reference = viewer.layers[f"{chosen.training_case} reference"]
    np.testing.assert_array_equal(flair.data, tcase.channel("flair"))
    np.testing.assert_allclose(layer_world_affine(flair), tcase.affine)
    np.testing.assert_array_equal(reference.data, tcase.label)
    assert flair.metadata[EVIDENCE_KEY]["query_case"] == case_name
    assert reference.colormap.map(np.array([2]))[0, :3] == pytest.approx([60 / 255, 180 / 255, 75 / 255], abs=0.01)
    assert viewer.canvas.grid.enabled and widget.side_button.isChecked()
    visible = [layer.name for layer in viewer.layers if layer.visible]
    assert f"{chosen.training_case} flair" in visible and f"{chosen.training_case} reference" in visible
    assert "flair" in visible  # the query case's image of the same modality, beside it
    world = tcase.affine @ np.append(chosen.centroid, 1.0)
    np.testing.assert_allclose(viewer.dims.point[-3:], world[:3], atol=np.abs(tcase.affine[:3, :3]).max())
    # The training case is not offered as a case to rank (it was opened as evidence).
    assert [widget.case_choice.itemText(i) for i in range(widget.case_choice.count())] == [case_name]
    count = len(viewer.layers)
    _click(qtbot, widget.proponents, 0)  # opened already: shown again, not added twice
    assert len(viewer.layers) == count and not widget.running

    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(200)
    viewer.screenshot(str(Path("/tmp/evidence_widget_test.png")), canvas_only=False, flash=False)

    widget.side_button.click()  # back: grid off, the case as it was, the training case kept but hidden
    assert not viewer.canvas.grid.enabled and not widget.side_button.isChecked()
    assert [layer.name for layer in viewer.layers if layer.visible] == ["t1", f"{case_name} reference"]
    widget.side_button.click()  # and beside it again
    assert viewer.canvas.grid.enabled and viewer.layers[f"{chosen.training_case} flair"].visible


def test_a_model_without_training_record_is_explained_in_one_sentence(
    make_napari_viewer, qtbot, tiny_case, tiny_card, notices
):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = EvidenceWidget(viewer)
    widget.set_model_card(tiny_card)
    sentence = str(NoTrainingRecord())
    assert widget.card_info.text() == sentence
    widget.run_button.click()
    assert not widget.running
    assert widget.status.text() == sentence and "segxai train" in sentence
    assert notices["warning"] == [sentence] and notices["error"] == []
    assert widget.proponents.count() == 0 and widget.opponents.count() == 0


def test_a_training_case_far_away_in_world_space_is_shown_alone(
    make_napari_viewer, qtbot, toy_model, make_tiny_case, lps_affine, notices
):
    from napari_segxai.core.influence import Evidence

    far = lps_affine.copy()
    far[:3, 3] += 500.0  # scanner coordinates nowhere near the template space of the training cases
    viewer = make_napari_viewer()
    open_case(viewer, make_tiny_case(far, name="Far_case"))
    widget = EvidenceWidget(viewer)
    widget.set_model_card(toy_model)
    evidence = Evidence(training_case="synth-toy-00000050", seed=50, train_class="edema", score=0.5,
                        centroid=(16, 16, 16), bbox=((10, 20), (10, 20), (10, 20)), voxels=100)
    widget.open_training_case(evidence)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    assert widget.apart and not viewer.canvas.grid.enabled and "alone" in widget.status.text()
    assert sorted(layer.name for layer in viewer.layers if layer.visible) == [
        "synth-toy-00000050 flair", "synth-toy-00000050 reference"]
    widget.side_button.click()
    assert [layer.name for layer in viewer.layers if layer.visible] == ["t1", "Far_case reference"]


@pytest.mark.slow
def test_the_demo_case_is_ranked_from_the_shipped_index_and_a_thumbnail_opens_its_training_case(
    make_napari_viewer, qtbot, notices, tmp_path
):
    """The bundled demo model on the demo case, indexed engine, from the index shipped beside its checkpoints."""
    import time

    from PIL import Image as PILImage

    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.influence.checkpoints import load_tracin_model
    from napari_segxai.core.influence.index import index_status, shipped_folder
    from napari_segxai.core.model.card import default_model_card
    from napari_segxai.core.io.generated_cases import demo_case_path

    card = default_model_card()
    model = load_tracin_model(card)
    path, status = index_status(model, [1, 2, 3], threshold=0.5)
    assert (status, path.parent) == ("current", shipped_folder(model)), (
        "the demo model ships its TracIn index: rebuild it with `segxai influence <demo case>` and commit it")
    viewer = make_napari_viewer(show=True)
    open_case(viewer, demo_case_path())
    widget = EvidenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training evidence")
    assert Path(widget.card_path.text()).resolve() == Path(card.path).resolve()  # the bundled demo card, by default
    assert widget.engine.currentText() == "indexed" and widget.layers.currentText() == "all"
    assert widget.scoring.currentText() == "specific"
    assert widget.card_info.text() == ("segxai-demo-3d: 162 training cases, 6 checkpoints. TracIn sums over 6 "
                                       "checkpoints along training.")
    widget.test_class.setCurrentText("edema")
    widget.top.setValue(4)

    start = time.perf_counter()
    _run(widget, qtbot)
    query_seconds = time.perf_counter() - start
    assert notices["error"] == [] and notices["warning"] == []
    shown = widget.last.result
    assert shown.details["index_status"] == "current" and shown.details["index_path"] == str(path)
    expected = influence(load_case(demo_case_path()), card, model=model)
    for strip, items in ((widget.proponents, expected.proponents("edema", top=4)),
                         (widget.opponents, expected.opponents("edema", top=4))):
        assert strip.count() == len(items) == 4
        assert_same_evidence(strip.evidences(), items)
        assert all(f"{e.score:+.3g}" in strip.item(row).text() for row, e in enumerate(items))
    assert all(e.score > 0 for e in expected.proponents("edema", top=4))
    assert all(e.score < 0 for e in expected.opponents("edema", top=4))
    qtbot.waitUntil(lambda: not widget.drawing, timeout=TIMEOUT_MS)
    assert all(strip.has_picture(row) for strip in (widget.proponents, widget.opponents) for row in range(4))

    chosen = widget.proponents.evidence(0)
    _click(qtbot, widget.proponents, 0)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    tcase = training_case(card, chosen.seed)
    flair = viewer.layers[f"{chosen.training_case} flair"]
    np.testing.assert_array_equal(flair.data, tcase.channel("flair"))
    np.testing.assert_allclose(layer_world_affine(flair), tcase.affine)
    np.testing.assert_array_equal(viewer.layers[f"{chosen.training_case} reference"].data, tcase.label)
    assert flair.metadata[EVIDENCE_KEY]["seed"] == chosen.seed and viewer.canvas.grid.enabled
    world = tcase.affine @ np.append(chosen.centroid, 1.0)
    np.testing.assert_allclose(viewer.dims.point[-3:], world[:3], atol=np.abs(tcase.affine[:3, :3]).max())

    shot = tmp_path / "demo_evidence.png"
    viewer.screenshot(str(shot), canvas_only=False, flash=False)
    rgb = np.asarray(PILImage.open(shot).convert("RGB")).astype(float)
    assert rgb.std() > 20, "the viewer picture is blank"
    print(f"demo query in the widget: {query_seconds:.1f} s (index {path.name})")


def test_a_model_trained_on_files_shows_and_opens_the_dataset_cases(make_napari_viewer, qtbot, toy_case, notices,
                                                                    tmp_path):
    """Trained with a dataset of files (nnU-Net layout): the evidence names the dataset's cases and a click opens
    that case's own files beside the query."""
    from _datasets import write_nnunet_dataset
    from napari_segxai._qt.evidence_strip import tooltip
    from napari_segxai.core.training.loop import train

    data = write_nnunet_dataset(tmp_path / "Dataset004_Toy", (50, 51, 52))
    config = copy.deepcopy(TINY)
    config["kwargs"] = {"channels": [8, 16], "strides": [2], "num_res_units": 0}
    config["schedule"]["steps"] = 60
    config["crop"].update(per_step=2, tumour_fraction=0.9)
    config["data"] = {"initial_cases": 3, "grow_every": 3, "dataset": str(data)}
    card_path = train(config, tmp_path / "model").card
    viewer = make_napari_viewer(show=True)
    open_case(viewer, toy_case)
    widget = EvidenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training evidence")
    widget.set_model_card(card_path)
    assert widget.card_info.text() == ("tiny-trained: 3 training cases, 5 checkpoints. TracIn sums over 5 checkpoints "
                                       "along training.")
    widget.test_class.setCurrentText("edema")
    _run(widget, qtbot)
    assert notices["error"] == [] and notices["warning"] == []
    shown = widget.proponents.evidences() + widget.opponents.evidences()
    assert shown and {e.training_case for e in shown} <= {"BRATS_000", "BRATS_001", "BRATS_002"}
    chosen = shown[0]
    assert f"({'case number'} {chosen.seed})" in tooltip(chosen)
    qtbot.waitUntil(lambda: not widget.drawing, timeout=TIMEOUT_MS)
    strip = widget.proponents if widget.proponents.count() else widget.opponents
    _click(qtbot, strip, 0)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    opened = strip.evidence(0)
    flair = viewer.layers[f"{opened.training_case} flair"]
    files = training_case(load_model_card(card_path), opened.seed)
    assert [p.name for p in files.source_paths][-1] == f"{opened.training_case}.nii.gz"
    np.testing.assert_array_equal(flair.data, files.channel("flair"))
    assert viewer.canvas.grid.enabled
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(200)
    viewer.screenshot(str(Path("/tmp/evidence_widget_files_test.png")), canvas_only=False, flash=False)


def test_evidence_for_the_uncertain_voxels_only(make_napari_viewer, qtbot, toy_model, toy_case, notices):
    """'only where the model is unsure': TracIn of the part of each class region above the entropy threshold."""
    from napari_segxai._qt.evidence_widget import UNCERTAIN_NATS
    from napari_segxai._qt.segment_widget import SegmentWidget
    from napari_segxai.core.io.nifti import load_case

    viewer = make_napari_viewer()
    open_case(viewer, toy_case)
    widget = EvidenceWidget(viewer)
    widget.set_model_card(toy_model)
    widget.engine.setCurrentText("exact")
    widget.uncertain.setChecked(True)
    widget.run_button.click()  # no entropy layer yet: one sentence, nothing computed
    assert not widget.running and "no entropy layer" in notices["error"][-1]

    segment = SegmentWidget(viewer)
    segment.set_model_card(toy_model)
    segment.uncertainty.setCurrentText("flips")
    segment.run_button.click()
    qtbot.waitUntil(lambda: not segment.running, timeout=TIMEOUT_MS)
    entropy = np.asarray(viewer.layers[f"{toy_case.name} entropy"].data)
    _run(widget, qtbot)
    assert (entropy > UNCERTAIN_NATS).any()  # the toy model is unsure along its regions' borders
    card = load_model_card(toy_model)
    expected = influence(load_case(toy_case), card, engine="exact", within=entropy > UNCERTAIN_NATS)
    whole = influence(load_case(toy_case), card, engine="exact")
    np.testing.assert_array_equal(widget.last.result.test_voxels, expected.test_voxels)
    assert expected.test_voxels.sum() < whole.test_voxels.sum()


def test_closing_the_viewer_mid_query_cancels_it_and_closes_cleanly(make_napari_viewer, qtbot, toy_model, toy_case):
    """Closing napari while a TracIn query runs stops the query first; nothing is left running."""
    viewer = make_napari_viewer(show=True)
    open_case(viewer, toy_case)
    widget = EvidenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training evidence")
    widget.set_model_card(toy_model)
    widget.run_button.click()
    assert widget.jobs.running
    viewer.close()
    assert not widget.jobs.running


def _drain(generator) -> tuple[list, object]:
    """Everything ``generator`` yields, and what it returns."""
    items = []
    while True:
        try:
            items.append(next(generator))
        except StopIteration as end:
            return items, end.value


def test_evidence_whose_training_files_are_gone_is_crossed_out_and_the_status_says_why(
    make_napari_viewer, qtbot, notices, tmp_path
):
    """A model trained on files, one training case's files gone (its TracIn scores are in the index): its evidence is
    still listed, without a picture, and the status line says why, once."""
    import shutil

    from _influence import blob_case, files_model
    from napari_segxai._qt.evidence_strip import draw_thumbnails
    from napari_segxai.core.io.nifti import save_nifti

    card_path, data = files_model(tmp_path / "toy", seeds=(61, 63))
    card = load_model_card(card_path)
    case = blob_case()
    result = influence(case, card)  # builds the index (the widget's settings) with every file here
    shown = result.proponents("edema", top=3) + result.opponents("edema", top=3)
    gone = shown[0].training_case
    shutil.rmtree(data / gone)

    drawn, note = _drain(draw_thumbnails(card, list(enumerate(shown)), 32))
    assert [k for k, _ in drawn] == [k for k, e in enumerate(shown) if e.training_case != gone]
    assert note.startswith(f"No picture: {gone}'s files are not in {data.resolve()}, so that evidence is listed")

    folder = tmp_path / "case"
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"blobs_{modality}.nii.gz")
    viewer = make_napari_viewer(show=True)
    open_case(viewer, folder)
    widget = EvidenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training evidence")
    widget.set_model_card(card_path)
    widget.test_class.setCurrentText("edema")
    widget.top.setValue(3)
    _run(widget, qtbot)
    qtbot.waitUntil(lambda: not widget.drawing, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: "No picture:" in widget.status.text(), timeout=5_000)
    assert notices["error"] == [] and notices["warning"] == []
    assert widget.status.text().count("No picture:") == 1 and note in widget.status.text()
    assert_same_evidence(widget.proponents.evidences() + widget.opponents.evidences(), shown)
    for strip in (widget.proponents, widget.opponents):
        for row, evidence in enumerate(strip.evidences()):
            assert strip.has_picture(row) == (evidence.training_case != gone)
            assert (note in strip.item(row).toolTip()) == (evidence.training_case == gone)
            if evidence.training_case == gone:  # crossed out, not the grey square of a picture still to come
                size = strip.thumbnail_size
                assert (_array(strip.item(row).icon().pixmap(size, size))[size // 2, size // 2] == 110).all()
    assert widget.proponents.toolTip() == note
