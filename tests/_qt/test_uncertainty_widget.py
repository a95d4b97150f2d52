"""The Segment widget's uncertainty option in a real napari viewer under Xvfb: layers, placement, refusals, picture."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from napari.layers import Image

from napari_segxai._layers import Key, Role, layer_world_affine
from napari_segxai._qt.segment_widget import SegmentWidget
from _viewer import open_case

TIMEOUT_MS = 120_000
CASE = "Tiny_case_001"


def _run(widget, qtbot, mode: str) -> None:
    widget.uncertainty.setCurrentText(mode)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_flips_add_entropy_and_mutual_information_beside_the_segmentation(
    make_napari_viewer, qtbot, tiny_case, tiny_card, notices, tmp_path
):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.set_model_card(tiny_card)
    assert [widget.uncertainty.itemText(i) for i in range(widget.uncertainty.count())] == [
        "none", "checkpoints", "flips", "dropout"]

    # The tiny card recorded no training: one sentence, nothing started.
    n_layers = len(viewer.layers)
    widget.uncertainty.setCurrentText("checkpoints")
    widget.run_button.click()
    assert not widget.running and len(viewer.layers) == n_layers
    assert "no recorded training checkpoints" in notices["error"][-1] and "flips" in notices["error"][-1]
    # Its UNet has no dropout: said from the job, nothing added.
    _run(widget, qtbot, "dropout")
    assert "no dropout layer" in notices["error"][-1] and len(viewer.layers) == n_layers

    values = []
    widget.progress_bar.valueChanged.connect(values.append)
    _run(widget, qtbot, "flips")
    assert len(notices["error"]) == 2, notices["error"]
    names = [layer.name for layer in viewer.layers]
    segmentation = viewer.layers[f"{CASE} segmentation"]
    entropy = viewer.layers[f"{CASE} entropy"]
    mutual = viewer.layers[f"{CASE} mutual information"]
    assert isinstance(entropy, Image) and isinstance(mutual, Image)
    assert names.index(f"{CASE} entropy") < names.index(f"{CASE} segmentation")  # drawn under the labels
    for layer in (entropy, mutual):
        assert layer.data.shape == segmentation.data.shape
        np.testing.assert_allclose(layer_world_affine(layer), layer_world_affine(segmentation))
        assert layer.metadata[Key.ROLE] == Role.UNCERTAINTY
    assert entropy.contrast_limits == [0.0, pytest.approx(min(float(entropy.data.max()), math.log(4)))] and entropy.colormap.name == "inferno (fading)"
    assert entropy.colormap.map([0.0])[0, 3] == 0 and entropy.colormap.map([1.0])[0, 3] == 1
    assert entropy.visible and not mutual.visible
    assert entropy.data.max() > 0 and np.all(mutual.data <= entropy.data + 1e-5)
    assert "flips ensemble of 8 runs" in widget.status.text()
    assert max(values) == widget.progress_bar.maximum() and any(0 < v < widget.progress_bar.maximum() for v in values)
    assert f"{CASE} entropy" not in widget.cases()  # not taken for an input channel

    # Run again: the layers are replaced in their places, not added.
    _run(widget, qtbot, "flips")
    assert [layer.name for layer in viewer.layers] == names

    # The picture the user looks at: the entropy (inferno) under the labels, beside the widget.
    centre = segmentation.data_to_world([10, 6, 5])
    viewer.dims.set_point(range(3), centre)
    for layer in viewer.layers:
        layer.visible = layer.name in (f"{CASE} entropy", "t1")
    viewer.reset_view()
    folder = Path(os.environ.get("SEGXAI_SCREENSHOTS", tmp_path))
    picture = viewer.screenshot(str(folder / "uncertainty_viewer.png"), canvas_only=False)
    widget.grab().save(str(folder / "uncertainty_widget.png"))
    rgb = picture[..., :3].astype(float)
    assert rgb.std() > 10
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 80).sum() > 20, "no inferno colour on screen"
