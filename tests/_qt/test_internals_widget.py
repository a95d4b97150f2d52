"""The Network internals dock widget in a real napari viewer under Xvfb: layers from the tree, feature maps on the
case's affine, filters (kernels, strongest patches), a maximised input, a surrogate, a refused run, Cancel, and
screenshots with the viewer shown."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QLabel

from napari_segxai._layers import layer_world_affine
from napari_segxai._qt.internals_widget import InternalsWidget
from _viewer import open_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_train import TINY  # noqa: E402

TIMEOUT_MS = 120_000


def test_internals_widget_adds_feature_maps_a_maximised_input_and_a_surrogate_on_the_case_grid(
    make_napari_viewer, qtbot, tiny_case, tiny_card, lps_affine, notices, tmp_path
):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    widget = InternalsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Network internals")
    widget.set_model_card(tiny_card)
    names = [widget.layer.itemData(i) for i in range(widget.layer.count())]
    assert "model.0.conv" in names and "model.1.submodule.conv" in names
    assert [widget.maximise.itemText(i) for i in range(widget.maximise.count())] == [
        "none", "necrosis", "edema", "enhancing"]
    widget.layer.setCurrentIndex(names.index("model.0.conv"))
    widget.keep.setValue(3)
    widget.maximise.setCurrentText("edema")
    widget.surrogate.setCurrentText("tree")
    widget.concepts.setCurrentText("edema")
    n_before = len(viewer.layers)
    widget.run_button.click()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    features = viewer.layers["Tiny_case_001 model.0.conv features"]
    assert isinstance(features, Image) and features.data.shape == (3, 16, 16, 12)
    np.testing.assert_allclose(layer_world_affine(features)[1:, 1:], lps_affine)
    maximised = [layer for layer in viewer.layers if "maximised class edema" in layer.name]
    assert len(maximised) == 4 and maximised[0].data.shape == (16, 16, 12)
    np.testing.assert_allclose(layer_world_affine(maximised[0]), lps_affine)
    surrogate = viewer.layers["Tiny_case_001 surrogate (tree)"]
    assert isinstance(surrogate, Labels)
    np.testing.assert_allclose(layer_world_affine(surrogate), lps_affine)
    text = widget.details.toPlainText()
    assert "slider  channel  class  specificity" in text and "Maximised class edema" in text
    assert "tree surrogate: agreement" in text and "class:" in text
    assert "Relevance of edema through model.0.conv (LRP):" in text
    assert len(viewer.layers) == n_before + 6
    # the new layers are not taken for the case's input channels
    assert [layer.name for layer in widget.case_layers()] == ["t1", "t1ce", "t2", "flair"]

    shot = os.environ.get("SEGXAI_SCREENSHOT_DIR")
    if shot:
        viewer.layers.selection.active = features
        viewer.screenshot(str(Path(shot) / "internals_widget.png"), canvas_only=False)

    # Run again: the layers are replaced, not added; Cancel stops a run and adds nothing.
    widget.surrogate.setCurrentText("none")
    widget.maximise.setCurrentText("none")
    widget.concepts.setCurrentText("none")
    widget.run_button.click()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(viewer.layers) == n_before + 6


def test_internals_widget_refuses_a_run_without_a_traceable_layer(make_napari_viewer, tiny_case, tmp_path, notices):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = InternalsWidget(viewer)
    widget.set_model_card(tmp_path / "missing.yaml")
    widget.run_button.click()
    assert len(notices["error"]) == 1 and "Traceback" not in notices["error"][0]
    assert not widget.running


def test_internals_widget_shows_the_first_layer_kernels_and_a_deeper_layer_strongest_patches(
    make_napari_viewer, qtbot, tiny_case, tiny_card, notices
):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    widget = InternalsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Network internals")
    widget.set_model_card(tiny_card)
    names = [widget.layer.itemData(i) for i in range(widget.layer.count())]
    assert not widget.filter_view.isVisible() and not widget.training.isEnabled()
    shot = os.environ.get("SEGXAI_SCREENSHOT_DIR")

    # The first convolution (4 filters of 3 x 3 x 3 over 4 sequences): one kernel montage per sequence.
    widget.layer.setCurrentIndex(names.index("model.0.conv"))
    widget.filters.setChecked(True)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    assert widget.filter_view.isVisible()
    captions = [label.text() for label in widget.filter_view.findChildren(QLabel)]
    assert "model.0.conv: its 4 kernels per input sequence" in captions[0]
    assert [c for c in ("t1", "t1ce", "t2", "flair") if c in captions] == ["t1", "t1ce", "t2", "flair"]
    # 4 rows of 3 tiles of 3 x 3 with 1-pixel gaps (15 x 11), 8 screen pixels each
    sizes = {(label.pixmap().width(), label.pixmap().height()) for label in widget.filter_view.labels}
    assert sizes == {(88, 120)}
    if shot:
        viewer.screenshot(str(Path(shot) / "internals_filters_kernels.png"), canvas_only=False)

    # A deeper layer: its three most class-specific channels' strongest patches on the case; training patches asked
    # for on a card without a training record give a sentence on the status line, not an error.
    widget.layer.setCurrentIndex(names.index("model.1.submodule.conv"))
    widget.training.setValue(1)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    assert "has no training record" in widget.status.text() and "segxai train" in widget.status.text()
    captions = [label.text() for label in widget.filter_view.findChildren(QLabel)]
    assert "model.1.submodule.conv: the strongest input patches of its 3 most class-specific channels" in captions[0]
    assert len([c for c in captions if c.startswith("channel ") and c.endswith("on Tiny_case_001")]) == 3
    assert not [c for c in captions if "training case" in c]
    assert len(widget.filter_view.labels) == 3 and all(not label.pixmap().isNull() for label in widget.filter_view.labels)
    if shot:
        viewer.screenshot(str(Path(shot) / "internals_filters_patches.png"), canvas_only=False)

    # Filters off: the pictures go.
    widget.filters.setChecked(False)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert not widget.filter_view.isVisible() and widget.filter_view.labels == []


def test_internals_widget_shows_the_strongest_patches_over_training_cases_of_a_card_with_a_training_record(
    make_napari_viewer, qtbot, tmp_path, monkeypatch, notices
):
    from napari_segxai.core.influence.training_set import CASES_ENV
    from napari_segxai.core.io.generated_cases import write_case
    from napari_segxai.core.training.loop import train
    from napari_segxai.core.training.synth import generate_case

    card = train(TINY, tmp_path / "tiny").card  # 10 steps on toy seeds 50..53, with its training record
    monkeypatch.setenv(CASES_ENV, str(tmp_path / "cases"))
    viewer = make_napari_viewer(show=True)
    open_case(viewer, write_case(generate_case(7, size="toy"), tmp_path / "synth-toy-00000007"))
    widget = InternalsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Network internals")
    widget.set_model_card(card)
    names = [widget.layer.itemData(i) for i in range(widget.layer.count())]
    widget.layer.setCurrentIndex(names.index("model.1.submodule.conv"))
    widget.filters.setChecked(True)
    widget.training.setValue(2)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == [] and "training record" not in widget.status.text()
    captions = [label.text() for label in widget.filter_view.findChildren(QLabel)]
    assert len([c for c in captions if c.startswith("channel ") and c.endswith("over 2 training case(s)")]) == 3
    assert len(widget.filter_view.labels) == 6
    shot = os.environ.get("SEGXAI_SCREENSHOT_DIR")
    if shot:
        viewer.screenshot(str(Path(shot) / "internals_filters_training.png"), canvas_only=False)
