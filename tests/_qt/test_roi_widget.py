"""The RoI importance dock widget in a real napari viewer under Xvfb: bars, views, export, highlight, theme."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent

from napari_segxai._layers import card_classes, case_metadata, label_display
from napari_segxai._qt.explain_display import relevance_layer_data
from napari_segxai._qt.roi_widget import HIGHLIGHT_ROLE, RoiWidget
from _viewer import open_case
from napari_segxai.core.attribution import explain_case
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.roi import brain_mask, case_regions, read_roi_csv, roi_importance

TIMEOUT_MS = 60_000


def _add_segmentation(viewer, case, card):
    """The case's reference labels as a segmentation layer, the way the Segment widget adds one."""
    kwargs = label_display(card_classes(card.classes))
    viewer.add_labels(case.label, name=f"{case.name} segmentation", affine=case.affine, opacity=0.5,
                      metadata=case_metadata(case, segxai_role="segmentation"), **kwargs)


def _add_relevance(viewer, result, case):
    """Relevance layers exactly as the Explain widget adds them."""
    for data, kwargs, _ in relevance_layer_data(result, case):
        viewer.add_image(data, **kwargs)


def _heights(widget, part="total"):
    """Bar heights as a (classes, items) array, from the drawn patches."""
    cells = [(k, i, patch.get_height()) for patch, _, k, i, p in widget.bars if p == part]
    table = np.full((max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1), np.nan)
    for k, i, height in cells:
        table[k, i] = height
    return table


def _click(widget, patch):
    """A left click in the middle of a bar, through matplotlib's event handling."""
    widget.canvas.draw()
    x, y = patch.get_x() + patch.get_width() / 2, patch.get_y() + patch.get_height() / 2
    px, py = patch.axes.transData.transform((x, y))
    for name in ("motion_notify_event", "button_press_event"):
        event = MouseEvent(name, widget.canvas, px, py, button=1 if name == "button_press_event" else None)
        widget.canvas.callbacks.process(name, event)


@pytest.fixture
def explained(tiny_case, tiny_card):
    """The tiny case, its card and a saliency result for its three tumour classes."""
    case, card = load_case(tiny_case), load_model_card(tiny_card)
    return case, card, explain_case(case, card, method="saliency", device="cpu")


def test_bars_follow_a_new_result_and_match_the_core_numbers(make_napari_viewer, qtbot, explained, notices, tmp_path):
    case, card, result = explained
    viewer = make_napari_viewer()
    open_case(viewer, case.source_paths[0].parent)
    _add_segmentation(viewer, case, card)
    widget = RoiWidget(viewer)
    viewer.window.add_dock_widget(widget, name="RoI importance")
    assert widget.entries == [] and widget.bars == []
    _add_relevance(viewer, result, case)
    qtbot.waitUntil(lambda: len(widget.entries) == 1 and not widget.jobs.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []

    expected = roi_importance(result, case_regions(case.label, card.classes, brain=brain_mask(case.channels)))
    shown = widget.current().importance
    assert shown.region_names == ("necrosis", "edema", "enhancing", "brain outside tumour", "background")
    assert shown.class_names == ("necrosis", "edema", "enhancing")
    np.testing.assert_allclose(_heights(widget), expected.importance, rtol=1e-6)
    assert len(widget.bars) == 3 * 5
    assert "segmentation layer" in widget.status.text()

    widget.signed.setChecked(True)
    np.testing.assert_allclose(_heights(widget, "positive"), expected.positive, rtol=1e-6)
    np.testing.assert_allclose(_heights(widget, "negative"), expected.negative, rtol=1e-6)
    widget.signed.setChecked(False)
    widget.view.setCurrentIndex(1)
    assert widget.showing_modalities()
    np.testing.assert_allclose(_heights(widget), expected.modality_share, rtol=1e-6)
    assert [widget.current().importance.modality_names[i] for _, _, k, i, _ in widget.bars if k == 0] == list(case.modalities)

    # Export: the CSV reads back to the same numbers; the PNG is a picture.
    back = read_roi_csv(widget.save_csv(tmp_path / "roi.csv"))
    np.testing.assert_array_equal(back.importance, shown.importance)
    png = widget.save_png(tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    with pytest.raises(ValueError, match=r"\.csv"):
        widget.save_csv(tmp_path / "roi.txt")
    # Copy: the clipboard holds the same table as CSV text and the chart as a picture.
    from qtpy.QtWidgets import QApplication

    widget.copy_button.click()
    clipboard = QApplication.clipboard().mimeData()
    assert clipboard.text() == (tmp_path / "roi.csv").read_text(encoding="utf-8")
    picture = clipboard.imageData()
    from qtpy.QtGui import QImage

    saved = QImage(str(png))
    assert picture is not None and (picture.width(), picture.height()) == (saved.width(), saved.height()) > (100, 100)

    # A second result (another class set) is added and shown.
    edema = explain_case(case, card, method="saliency", classes=["edema"], device="cpu")
    _add_relevance(viewer, edema, case)
    qtbot.waitUntil(lambda: len(widget.entries) == 2 and not widget.jobs.running, timeout=TIMEOUT_MS)
    assert widget.result_choice.count() == 2 and widget.result_choice.currentIndex() == 1
    assert widget.current().importance.class_names == ("edema",)

    # Results whose layers are all removed are forgotten (they hold the whole relevance).
    for layer in [layer for layer in viewer.layers if layer.metadata.get("segxai_result") is result]:
        viewer.layers.remove(layer)
    assert [entry.result for entry in widget.entries] == [edema] and widget.result_choice.count() == 1
    assert widget.current().importance.class_names == ("edema",)


def test_clicking_a_bar_shows_its_region_and_a_modality_bar_selects_its_layer(make_napari_viewer, qtbot, explained):
    case, card, result = explained
    viewer = make_napari_viewer()
    open_case(viewer, case.source_paths[0].parent)
    _add_segmentation(viewer, case, card)
    _add_relevance(viewer, result, case)
    widget = RoiWidget(viewer)   # results already in the viewer are picked up too
    viewer.window.add_dock_widget(widget, name="RoI importance")
    qtbot.waitUntil(lambda: len(widget.entries) == 1 and not widget.jobs.running, timeout=TIMEOUT_MS)

    bar = next(b for b in widget.bars if widget.current().importance.region_names[b[3]] == "edema" and b[2] == 1)
    widget.canvas.draw()
    centre = bar[0].axes.transData.transform((bar[0].get_x() + bar[0].get_width() / 2, bar[0].get_height() / 2))
    widget.canvas.callbacks.process("motion_notify_event", MouseEvent("motion_notify_event", widget.canvas, *centre))
    share = widget.current().importance.region("edema", "edema")
    assert widget.status.text().startswith(f"edema: {share:.1%} of |relevance| in region edema")
    assert bar[0].get_linewidth() == 2.0 and "RoI: edema" not in viewer.layers   # hovering only says the value
    _click(widget, bar[0])
    layer = viewer.layers["RoI: edema"]
    assert layer.metadata["segxai_role"] == HIGHLIGHT_ROLE and layer.contour == 1
    np.testing.assert_array_equal(layer.data.astype(bool), case.label == 2)
    np.testing.assert_allclose(layer.affine.affine_matrix, case.affine)
    assert "edema" in widget.status.text() and "voxels" in widget.status.text()
    # The slices moved into the region: the voxel at the current point is oedema.
    voxel = np.round(layer.world_to_data(viewer.dims.point)).astype(int)
    assert case.label[tuple(voxel)] == 2
    _click(widget, bar[0])
    assert "RoI: edema" not in viewer.layers
    assert "RoI: edema" not in [widget.atlas_choice.itemText(i) for i in range(widget.atlas_choice.count())]

    widget.view.setCurrentIndex(1)
    bar = next(b for b in widget.bars if b[2] == 0 and b[3] == 3)   # necrosis, 4th modality
    _click(widget, bar[0])
    assert viewer.layers.selection.active.name == f"necrosis · {case.modalities[3]} · saliency"


def test_atlas_regions_empty_state_and_theme(make_napari_viewer, qtbot, explained, notices):
    case, card, result = explained
    viewer = make_napari_viewer()
    open_case(viewer, case.source_paths[0].parent)
    widget = RoiWidget(viewer)
    assert widget.current() is None and widget.bars == []
    assert any("No relevance result" in t.get_text() for ax in widget.figure.axes for t in ax.texts)

    # Without a segmentation layer the explained target regions are the class regions.
    _add_relevance(viewer, result, case)
    qtbot.waitUntil(lambda: len(widget.entries) == 1 and not widget.jobs.running, timeout=TIMEOUT_MS)
    assert "target regions" in widget.status.text()
    np.testing.assert_array_equal(widget.current().regions["edema"], result.target.masks[1])

    # An atlas labels layer adds one region per label, named from its features.
    atlas = np.zeros(case.shape, dtype=np.int32)
    atlas[: case.shape[0] // 2] = 1
    atlas[case.shape[0] // 2 :] = 2
    viewer.add_labels(atlas, name="hemispheres", affine=case.affine,
                      features={"index": [0, 1, 2], "class": ["none", "right", "left"]})
    widget.atlas_choice.setCurrentText("hemispheres")
    widget.recompute()
    qtbot.waitUntil(lambda: not widget.jobs.running, timeout=TIMEOUT_MS)
    table = widget.current().importance
    assert table.region_names[-2:] == ("atlas:right", "atlas:left")
    np.testing.assert_allclose(table.importance[:, -2:].sum(axis=1), 1.0, rtol=1e-6)
    assert len(widget.entries) == 1 and notices["error"] == []

    dark = widget.mpl_style["figure.facecolor"]
    viewer.theme = "light"
    assert widget.mpl_style["figure.facecolor"] != dark
    assert widget.figure.get_facecolor()[:3] != pytest.approx((0.137, 0.141, 0.169), abs=0.01)


def test_closing_the_viewer_mid_summary_cancels_it_and_closes_cleanly(make_napari_viewer, qtbot, explained):
    """Closing napari while RoI importance computes used to crash it (segmentation fault)."""
    case, card, result = explained
    viewer = make_napari_viewer(show=True)
    open_case(viewer, case.source_paths[0].parent)
    _add_segmentation(viewer, case, card)
    widget = RoiWidget(viewer)
    viewer.window.add_dock_widget(widget, name="RoI importance")
    _add_relevance(viewer, result, case)
    qtbot.waitUntil(lambda: len(widget.entries) == 1 and not widget.jobs.running, timeout=TIMEOUT_MS)
    widget.run_button.click()
    assert widget.jobs.running
    viewer.close()
    assert not widget.jobs.running
