"""An nnU-Net v2 model folder in the viewer: chosen as the model, it segments and explains the open case."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segxai._layers import layer_world_affine
from napari_segxai._qt.explain_widget import ExplainWidget
from napari_segxai._qt.segment_widget import SegmentWidget
from _viewer import open_case

pytest.importorskip("nnunetv2")
TIMEOUT_MS = 180_000


def test_an_nnunet_folder_segments_and_explains_in_the_viewer(make_napari_viewer, qtbot, nnunet_model, notices,
                                                                 tmp_path):
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.model.inference import segment

    viewer = make_napari_viewer(show=True)
    open_case(viewer, nnunet_model.case)
    segment_widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment_widget, name="Segment")
    segment_widget.set_model_card(nnunet_model.folder)
    assert "edema" in segment_widget.card_info.text()
    segment_widget.run_button.click()
    qtbot.waitUntil(lambda: not segment_widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    labels = [layer for layer in viewer.layers if layer.metadata.get("segxai_role") == "segmentation"]
    assert len(labels) == 1
    expected = segment(load_case(nnunet_model.case), load_model_card(nnunet_model.folder), device="cpu")
    np.testing.assert_array_equal(np.asarray(labels[0].data), expected.labels)
    np.testing.assert_allclose(layer_world_affine(labels[0]), layer_world_affine(viewer.layers["t1"]))

    explain = ExplainWidget(viewer)
    viewer.window.add_dock_widget(explain, name="Explain")
    explain.set_model_card(nnunet_model.folder)
    assert [explain.class_list.item(i).text() for i in range(explain.class_list.count())] == \
        ["background", "necrosis", "edema", "enhancing"]
    explain.set_classes(["edema"])
    explain.run_button.click()
    qtbot.waitUntil(lambda: not explain.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    maps = [layer for layer in viewer.layers if layer.metadata.get("segxai_role") == "relevance"]
    assert {layer.name for layer in maps} == {f"edema · {m} · saliency" for m in ("t1", "t1ce", "t2", "flair")}
    assert all(layer.data.shape == viewer.layers["t1"].data.shape for layer in maps)
    picture = viewer.screenshot(canvas_only=False, flash=False)
    assert picture.std() > 10  # a real picture, not a black window
    from imageio.v3 import imwrite

    imwrite(tmp_path / "nnunet_viewer.png", picture)
