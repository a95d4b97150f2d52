"""The Network internals dock widget in a real napari viewer under Xvfb: layers from the tree, feature maps on the
case's affine, a maximised input, a surrogate, a refused run, Cancel, and a screenshot with the viewer shown."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from napari_segxai._layers import layer_world_affine
from napari_segxai._qt.internals_widget import InternalsWidget
from _viewer import open_case

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
