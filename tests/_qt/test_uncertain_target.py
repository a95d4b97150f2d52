"""Why is the model unsure here? Explain (and so RoI importance and Trust) over the uncertain voxels in one choice."""

from __future__ import annotations

import numpy as np

from _viewer import open_case
from napari_segxai._qt.explain_widget import ExplainWidget
from napari_segxai._qt.segment_widget import SegmentWidget

CASE = "Tiny_case_001"


def test_explain_over_the_voxels_whose_entropy_passes_the_threshold(make_napari_viewer, qtbot, tiny_case, tiny_card,
                                                                   notices):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    explain = ExplainWidget(viewer)
    explain.set_model_card(tiny_card)
    explain.target.setCurrentIndex(explain.target.findData("uncertain"))
    assert explain.threshold.isEnabled() and not explain.confident.isEnabled()
    explain.run_button.click()  # no entropy layer yet: one sentence, nothing computed
    assert not explain.running and "no entropy layer of Tiny_case_001" in notices["error"][-1]

    segment = SegmentWidget(viewer)
    segment.set_model_card(tiny_card)
    segment.uncertainty.setCurrentText("flips")
    segment.run_button.click()
    qtbot.waitUntil(lambda: not segment.running, timeout=120_000)
    entropy = np.asarray(viewer.layers[f"{CASE} entropy"].data)
    threshold = float(np.quantile(entropy, 0.9))
    explain.threshold.setValue(threshold)
    explain.run_button.click()
    qtbot.waitUntil(lambda: not explain.running, timeout=120_000)
    result = explain.last.result
    expected = int((entropy > explain.threshold.value()).sum())
    assert result.target.kind == "region" and all(int(m.sum()) == expected for m in np.asarray(result.target.masks))

    import pytest

    from napari_segxai._qt.targets import uncertain_voxels

    with pytest.raises(ValueError, match="lower the threshold"):  # no voxel above the highest entropy
        uncertain_voxels(viewer, explain.chosen_case(), float(entropy.max()))
