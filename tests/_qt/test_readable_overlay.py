"""Overlays a radiologist can read: relevance inside the head above a percentile, outlined segmentation, a legend."""

from __future__ import annotations

import numpy as np

from _viewer import open_case
from napari_segxai._layers import Role, layer_role
from napari_segxai._qt.explain_display import DEFAULT_THRESHOLD, head_mask, shown_maps
from napari_segxai._qt.explain_widget import ExplainWidget
from napari_segxai._qt.segment_widget import SegmentWidget


def test_shown_maps_keep_the_head_above_the_percentile():
    maps = np.arange(2 * 4 * 4 * 2, dtype=np.float32).reshape(2, 4, 4, 2) - 30
    head = np.zeros((4, 4, 2), bool)
    head[1:3, 1:3] = True
    shown = shown_maps(maps, head, 50.0)
    assert not shown[:, ~head].any()
    inside = np.abs(maps[:, head])
    kept = np.abs(shown[:, head])
    assert np.all((kept == 0) | (kept >= np.percentile(inside[inside > 0], 50)))
    np.testing.assert_array_equal(shown_maps(maps, None, 0.0), maps)


def test_explain_outlines_the_segmentation_masks_the_maps_and_says_what_the_colours_mean(
        make_napari_viewer, qtbot, tiny_case, tiny_card, tmp_path):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    for layer in viewer.layers:  # air around the head: every channel 0 in the first two columns
        if layer_role(layer) == Role.IMAGE:
            layer.data[:2] = 0
            layer.refresh()
    segment = SegmentWidget(viewer)
    segment.set_model_card(tiny_card)
    segment.run_button.click()
    qtbot.waitUntil(lambda: not segment.running, timeout=120_000)
    explain = ExplainWidget(viewer)
    viewer.window.add_dock_widget(explain, name="Explain")
    explain.set_model_card(tiny_card)
    explain.run_button.click()
    qtbot.waitUntil(lambda: not explain.running, timeout=120_000)
    result = explain.last.result
    layers = explain.relevance_layers()
    assert layers and all(not np.asarray(layer.data)[:2].any() for layer in layers)
    head = head_mask(explain.last.case)
    for layer in layers:
        k = list(result.class_names).index(layer.metadata["segxai_class"])
        c = list(result.channel_names).index(layer.metadata["segxai_modality"])
        np.testing.assert_array_equal(layer.data, shown_maps(result.relevance[k], head, DEFAULT_THRESHOLD)[c])
    segmentation = next(layer for layer in viewer.layers if layer_role(layer) == Role.SEGMENTATION)
    assert segmentation.contour == 1
    assert viewer.text_overlay.visible and "red for the class, blue against" in viewer.text_overlay.text

    explain.display.whole.setChecked(True)  # the maps as computed
    for layer in layers:
        k = list(result.class_names).index(layer.metadata["segxai_class"])
        c = list(result.channel_names).index(layer.metadata["segxai_modality"])
        np.testing.assert_array_equal(layer.data, result.relevance[k][c])
    explain.display.whole.setChecked(False)
    viewer.screenshot(str(tmp_path / "overlay.png"), canvas_only=False)
    import shutil

    shutil.copy(tmp_path / "overlay.png", "/tmp/overlay.png")
