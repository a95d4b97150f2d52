"""The Explain dock widget in a real napari viewer under Xvfb: layers, targets, display, grid, export, picture."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtWidgets import QCheckBox, QComboBox, QSpinBox

from napari_segxai._layers import layer_world_affine
from napari_segxai._qt.explain_display import DEFAULT_THRESHOLD, head_mask, shown_maps
from napari_segxai._qt.explain_widget import ExplainWidget
from napari_segxai._qt.targets import shapes_region
from _viewer import open_case
from napari_segxai.core.attribution import available_methods, explain_case, method_class
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.loading import load_model_card

TIMEOUT_MS = 120_000
MODALITIES = ("t1", "t1ce", "t2", "flair")
CLASSES = ("necrosis", "edema", "enhancing")
CENTRE = (10, 6, 5)  # the tumour centre of the tiny case, in voxels


def _run(widget, qtbot):
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)


def test_explain_widget_adds_one_layer_per_class_and_modality_on_the_case_grid(
    make_napari_viewer, qtbot, tiny_case, tiny_card, lps_affine, notices, tmp_path
):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Explain")
    assert widget.case_choice.currentText() == "Tiny_case_001"
    assert [widget.method.itemText(i) for i in range(widget.method.count())] == list(available_methods())
    assert widget.method.currentText() == "saliency"
    # The card of the case's latest segmentation becomes the card (and its classes the choices).
    from napari_segxai._layers import case_metadata

    t1 = viewer.layers["t1"]
    meta = case_metadata(load_case(tiny_case), segxai_role="segmentation", segxai_model_card=str(tiny_card))
    viewer.add_labels(np.zeros((16, 16, 12), np.int16), name="Tiny_case_001 segmentation",
                      affine=layer_world_affine(t1), metadata=meta)
    assert widget.card_path.text() == str(tiny_card)
    viewer.layers.remove("Tiny_case_001 segmentation")
    assert [widget.class_list.item(i).text() for i in range(widget.class_list.count())] == ["background", *CLASSES]
    assert widget.chosen_classes() == [1, 2, 3]
    images = {layer.name: layer for layer in viewer.layers if layer.name in MODALITIES}

    values = []
    widget.progress_bar.valueChanged.connect(values.append)
    widget.run_button.click()
    assert widget.running
    widget.run_button.click()
    assert len(notices["warning"]) == 1 and "already running" in notices["warning"][0]
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"] == []
    assert any(0 < v < widget.progress_bar.maximum() for v in values), values

    expected = explain_case(load_case(tiny_case), load_model_card(tiny_card), method="saliency", device="cpu")
    for k, class_name in enumerate(CLASSES):
        limits = None
        for c, modality in enumerate(MODALITIES):
            layer = viewer.layers[f"{class_name} · {modality} · saliency"]
            assert layer.data.shape == images[modality].data.shape == (16, 16, 12)
            np.testing.assert_allclose(layer_world_affine(layer), layer_world_affine(images[modality]))
            np.testing.assert_allclose(layer_world_affine(layer), lps_affine)
            shown = shown_maps(expected.relevance[k], head_mask(load_case(tiny_case)), DEFAULT_THRESHOLD)[c]
            np.testing.assert_allclose(layer.data, shown, rtol=1e-4, atol=1e-7)  # in the head, above the threshold
            low, high = layer.contrast_limits
            assert low == pytest.approx(-high) and high > 0  # signed: symmetric around zero
            assert limits is None or layer.contrast_limits == limits  # one scale per class
            limits = layer.contrast_limits
            assert layer.colormap.map(np.array([0.5]))[0, 3] < 0.05  # zero relevance is see-through
            assert layer.metadata["segxai_role"] == "relevance"
    assert "predicted region" in widget.status.text()
    # one map is shown: the class with the largest region, on the sequence that carries it (Shapley values)
    sizes = [int(mask.sum()) for mask in expected.target.masks]
    k = int(np.argmax(sizes))
    carrier = explain_case(load_case(tiny_case), load_model_card(tiny_card), method="modality_shapley",
                           classes=[CLASSES[k]], device="cpu", sequences=True).sequences.carrier(CLASSES[k])
    shown = [layer.name for layer in viewer.layers if layer.metadata.get("segxai_role") == "relevance" and layer.visible]
    assert shown == [f"{CLASSES[k]} · {carrier} · saliency"]
    assert viewer.layers.selection.active.name == shown[0] and widget.grid_class.currentText() == CLASSES[k]

    # Display controls: the percentile sets the contrast limits, the slider the opacity.
    layer = viewer.layers["edema · flair · saliency"]
    high_99 = layer.contrast_limits[1]
    widget.percentile.setValue(80.0)
    assert 0 < layer.contrast_limits[1] < high_99
    assert layer.contrast_limits[1] == pytest.approx(np.percentile(np.abs(expected.relevance[1])[expected.relevance[1] != 0], 80), rel=1e-4)
    widget.opacity.setValue(40)
    assert layer.opacity == pytest.approx(0.4)

    # Grid view: modality images each paired with the class's map, then undone.
    n_layers = len(viewer.layers)
    widget.grid_class.setCurrentText("edema")
    widget.grid_button.click()
    grid = viewer.canvas.grid
    assert grid.enabled and grid.stride == 2
    visible = [layer.name for layer in viewer.layers if layer.visible]
    assert visible == [name for m in MODALITIES for name in (m, f"edema · {m} · saliency")]
    assert grid.actual_shape(viewer.layers) == (2, 2)
    widget.grid_button.click()
    assert not grid.enabled and len(viewer.layers) == n_layers
    assert [layer.name for layer in viewer.layers if layer.visible and "saliency" in layer.name] == shown

    # Export: one NIfTI per class with the case affine, and a JSON record; inputs are refused.
    written = widget.export_relevance(tmp_path / "export")
    image = nib.load(written["edema"])
    np.testing.assert_allclose(image.affine, lps_affine)
    np.testing.assert_allclose(image.get_fdata(), np.moveaxis(expected.relevance[1], 0, -1), rtol=1e-4, atol=1e-7)
    assert json.loads(open(written["__json__"]).read())["channels"] == list(MODALITIES)
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        from napari_segxai.cli.explain import write_relevance

        write_relevance(widget.last.result, "Tiny_case_001", tiny_case,
                        protected=[tiny_case / "Tiny_case_001_saliency_edema.nii.gz"])

    # Running again replaces the layers instead of adding more.
    _run(widget, qtbot)
    assert len(viewer.layers) == n_layers


def test_targets_region_point_errors_and_cancel(make_napari_viewer, qtbot, tiny_case, tiny_card, notices):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = ExplainWidget(viewer)
    widget.set_model_card(tiny_card)
    widget.set_classes(["edema"])
    case = load_case(tiny_case)
    card = load_model_card(tiny_card)
    centre_world = viewer.layers["t1"].data_to_world(CENTRE)

    # A point from a click in the viewer: press and release without dragging.
    widget.target.setCurrentIndex(2)
    assert widget.point_source.isEnabled() and not widget.confident.isEnabled()
    widget.run_button.click()
    assert "No point is chosen" in notices["error"][-1] and not widget.running

    class Click:
        def __init__(self, position):
            self.position, self.type = position, "mouse_press"

    click = Click(centre_world)
    handler = widget._on_click(viewer, click)
    next(handler)
    click.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(handler)
    np.testing.assert_allclose(widget.point, centre_world)
    viewer.dims.ndisplay = 3  # a click in 3D has no depth: ignored, the widget says why
    assert list(widget._on_click(viewer, Click(np.zeros(3)))) == []
    assert "2D view" in widget.point_info.text()
    np.testing.assert_allclose(widget.point, centre_world)
    viewer.dims.ndisplay = 2
    _run(widget, qtbot)
    expected = explain_case(case, card, classes=["edema"], target="voxel", voxel=CENTRE, device="cpu")
    np.testing.assert_allclose(widget.last.result.relevance[0, 2], expected.relevance[0, 2], rtol=1e-4, atol=1e-7)
    assert "voxel" in widget.status.text()

    # A point from a points layer (its last point).
    viewer.add_points([viewer.layers["t1"].data_to_world((4, 4, 4))], name="where")
    widget.point_source.setCurrentText("where")
    _run(widget, qtbot)
    expected = explain_case(case, card, classes=["edema"], target="voxel", voxel=(4, 4, 4), device="cpu")
    np.testing.assert_allclose(widget.last.result.relevance[0, 2], expected.relevance[0, 2], rtol=1e-4, atol=1e-7)

    # A painted region: a labels layer on the case grid.
    region = np.zeros((16, 16, 12), np.uint8)
    region[8:12, 4:8, 3:7] = 1
    t1 = viewer.layers["t1"]
    viewer.add_labels(region, name="painted", affine=layer_world_affine(t1))
    widget.target.setCurrentIndex(1)
    widget.region_layer.setCurrentText("painted")
    widget.method.setCurrentText("integrated_gradients")
    form = widget.parameters
    assert isinstance(form.editor("steps"), QSpinBox) and isinstance(form.editor("baseline"), QComboBox)
    form.editor("steps").setValue(4)
    form.editor("baseline").setCurrentText("minimum")
    _run(widget, qtbot)
    expected = explain_case(case, card, method="integrated_gradients", classes=["edema"], target="region",
                            region=region > 0, steps=4, baseline="minimum", device="cpu")
    assert "edema · flair · integrated_gradients" in viewer.layers
    np.testing.assert_allclose(widget.last.result.relevance[0, 3], expected.relevance[0, 3], rtol=1e-4, atol=1e-6)
    assert widget.last.result.parameters["steps"] == 4

    # A labels layer off the case grid is refused with one sentence.
    viewer.add_labels(np.ones((8, 8, 8), np.uint8), name="elsewhere")
    widget.region_layer.setCurrentText("elsewhere")
    before = len(notices["error"])
    widget.run_button.click()
    assert len(notices["error"]) == before + 1 and "not on the case's grid" in notices["error"][-1]
    assert not widget.running

    # No class ticked.
    widget.target.setCurrentIndex(0)
    widget.set_classes([])
    widget.run_button.click()
    assert "No class is ticked" in notices["error"][-1]

    # Cancel: a slow method stops, nothing is added, the widget says so.
    widget.set_classes(list(CLASSES))
    widget.method.setCurrentText("occlusion")
    form.editor("window").setValue(2)
    form.editor("stride").setValue(1)
    form.editor("batch_size").setValue(1)
    n_layers = len(viewer.layers)
    widget.run_button.click()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.text() == "Cancelled." and any("cancelled" in m for m in notices["info"])
    assert len(viewer.layers) == n_layers


def test_a_region_drawn_as_shapes_is_rasterised_on_the_case_grid(
    make_napari_viewer, qtbot, tiny_case, tiny_card, lps_affine, notices
):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = ExplainWidget(viewer)
    widget.set_model_card(tiny_card)
    widget.set_classes(["edema"])
    widget.target.setCurrentIndex(1)
    case = load_case(tiny_case)
    t1 = viewer.layers["t1"]

    # Drawn over the case's image with its affine: shape vertices are case voxels (slice 10 of axis 0).
    corners = np.array([[10, 4, 3], [10, 8, 3], [10, 8, 7], [10, 4, 7]], float)
    viewer.add_shapes([corners], shape_type="rectangle", name="drawn", affine=layer_world_affine(t1))
    choices = [widget.region_layer.itemText(i) for i in range(widget.region_layer.count())]
    assert "drawn" in choices
    widget.region_layer.setCurrentText("drawn")
    region = np.zeros(case.shape, bool)
    region[10, 4:9, 3:8] = True  # napari's to_masks keeps the voxels on the outline
    np.testing.assert_array_equal(widget.target_arguments(case)["region"], region)
    _run(widget, qtbot)
    assert notices["error"] == []
    expected = explain_case(case, load_model_card(tiny_card), classes=["edema"], target="region", region=region,
                            device="cpu")
    np.testing.assert_allclose(widget.last.result.relevance[0, 2], expected.relevance[0, 2], rtol=1e-4, atol=1e-7)
    assert "region" in widget.status.text()

    # Drawn in world coordinates (a new shapes layer has no affine; the case is LPS, flipped against
    # the world), on a slice of another axis: carried through the world onto the case's voxels.
    voxels = np.array([[8, 4, 5], [12, 4, 5], [12, 8, 5], [8, 8, 5]], float)
    world = voxels @ lps_affine[:3, :3].T + lps_affine[:3, 3]
    viewer.add_shapes([world], shape_type="polygon", name="in world")
    region = np.zeros(case.shape, bool)
    region[8:13, 4:9, 5] = True
    np.testing.assert_array_equal(shapes_region(viewer.layers["in world"], case.shape, case.affine), region)
    # two shapes on different slices add up; a shape on a slice outside the case adds nothing
    viewer.layers["in world"].add([corners @ lps_affine[:3, :3].T + lps_affine[:3, 3]], shape_type="rectangle")
    viewer.layers["in world"].add([np.array([[40, 0, 0], [40, 4, 0], [40, 4, 4]]) @ lps_affine[:3, :3].T], shape_type="polygon")
    both = shapes_region(viewer.layers["in world"], case.shape, case.affine)
    assert both.sum() == 25 + 25 - 5 and both[10, 4:9, 3:8].all() and both[8:13, 4:9, 5].all()  # 5 shared voxels

    # What cannot be rasterised on the case's grid is refused with one sentence.
    tilt = np.deg2rad(30)
    rotated = np.eye(4)
    rotated[[0, 0, 2, 2], [0, 2, 0, 2]] = np.cos(tilt), -np.sin(tilt), np.sin(tilt), np.cos(tilt)
    viewer.add_shapes([corners], shape_type="rectangle", name="tilted", affine=rotated @ layer_world_affine(t1))
    viewer.add_shapes([[[0, 0], [4, 4]]], shape_type="rectangle", name="flat")
    viewer.add_shapes([corners + [30, 0, 0]], shape_type="rectangle", name="outside", affine=layer_world_affine(t1))
    viewer.add_shapes(ndim=3, name="nothing")
    for name, message in (("tilted", "does not lie in one slice"), ("flat", "has 2 dimensions"),
                          ("outside", "cover no voxel"), ("nothing", "has no shape")):
        widget.region_layer.setCurrentText(name)
        before = len(notices["error"])
        widget.run_button.click()
        assert len(notices["error"]) == before + 1 and message in notices["error"][-1], name
        assert not widget.running


def test_parameter_form_follows_every_registered_method(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = ExplainWidget(viewer)
    for name in available_methods():
        widget.method.setCurrentText(name)
        declared = method_class(name).parameters
        values = widget.parameters.values()
        assert values == {key: p.default for key, p in declared.items()}, name
        for key, parameter in declared.items():
            if isinstance(parameter.default, bool):
                assert isinstance(widget.parameters.editor(key), QCheckBox)


def test_picture_of_the_explained_case_is_not_blank(make_napari_viewer, qtbot, tiny_case, tiny_card, tmp_path):
    from PIL import Image as PILImage

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    open_case(viewer, tiny_case)
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Explain")
    widget.set_model_card(tiny_card)
    widget.set_classes(["edema"])
    _run(widget, qtbot)
    for layer in viewer.layers:
        layer.visible = layer.name in ("flair", "edema · flair · saliency")
    viewer.dims.set_point(range(3), viewer.layers["flair"].data_to_world(CENTRE))
    viewer.reset_view()
    path = widget.save_picture(tmp_path / "explain.png")
    picture = np.asarray(PILImage.open(path).convert("RGB")).astype(float)
    assert picture.max() > 100 and picture.std() > 10, "the picture is blank"
    saturation = picture.max(axis=2) - picture.min(axis=2)
    assert (saturation > 80).sum() > 50  # red and blue relevance over the grey image
    with pytest.raises(ValueError, match="png"):
        widget.save_picture(tmp_path / "explain.jpg")
    widget.grid_button.click()
    qtbot.wait(300)
    grid_path = widget.save_picture(tmp_path / "explain_grid.png")
    grid_picture = np.asarray(PILImage.open(grid_path).convert("RGB")).astype(float)
    assert grid_picture.shape == picture.shape
    # four views with black margins between them: whole black rows and columns cross the picture
    dark = grid_picture.max(axis=2) < 5
    middle_rows = dark[grid_picture.shape[0] // 3: 2 * grid_picture.shape[0] // 3].all(axis=1)
    middle_cols = dark[:, grid_picture.shape[1] // 3: 2 * grid_picture.shape[1] // 3].all(axis=0)
    assert middle_rows.any() and middle_cols.any()
    assert (grid_picture.max(axis=2) - grid_picture.min(axis=2) > 80).sum() > 50


SCRIPT = """
import napari
viewer = napari.Viewer(show=False)
from napari_segxai._qt.explain_widget import ExplainWidget
widget = ExplainWidget(viewer)
from napari_segxai.core.model.architectures import create_network
create_network("UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]})
viewer.close()
print("alive")
"""


def test_opening_the_widget_after_the_viewer_does_not_crash_napari():
    """torch's lazy triton import after the viewer's OpenGL context segfaulted (see _qt/no_triton.py)."""
    import os
    import subprocess
    import sys

    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X display (run under xvfb-run)")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "alive" in done.stdout, done.stderr[-2000:]


def test_percentile_limits_from_a_sample_of_a_large_map():
    from napari_segxai._qt.explain_display import magnitudes, relevance_limits

    rng = np.random.default_rng(0)
    maps = rng.laplace(size=(4, 120, 120, 78)).astype(np.float32)
    sample = magnitudes(maps, limit=500_000)
    assert sample.size <= 500_000 and np.all(np.diff(sample) >= 0)
    exact = np.percentile(np.abs(maps), 99)
    low, high = relevance_limits(maps, 99, True, sorted_magnitudes=sample)
    assert low == -high and high == pytest.approx(exact, rel=0.02)
    assert relevance_limits(maps, 99, False, sorted_magnitudes=sample) == (0.0, high)
    assert relevance_limits(np.zeros((2, 4, 4, 4)), 99, True) == (-1.0, 1.0)


def test_a_class_not_predicted_is_skipped_by_name_and_no_finding_at_all_is_said_in_the_status(
    make_napari_viewer, qtbot, tiny_case, notices, tmp_path
):
    from _no_finding import silence_classes
    from conftest import write_tiny_card

    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = ExplainWidget(viewer)
    edema_only = write_tiny_card(tmp_path / "edema_only")
    silence_classes(edema_only.parent / "weights.safetensors", (0, 1, 3))  # edema everywhere
    widget.set_model_card(edema_only)
    assert widget.chosen_classes() == [1, 2, 3]
    _run(widget, qtbot)
    widget.finish_adding()
    assert notices["error"] == []
    assert "No necrosis or enhancing predicted: skipped." in widget.status.text()
    assert "edema (label 2): " in widget.status.text()
    assert not any(layer.name.startswith(("necrosis", "enhancing")) for layer in viewer.layers)

    nothing = write_tiny_card(tmp_path / "no_tumour")
    silence_classes(nothing.parent / "weights.safetensors", (1, 2, 3))  # background everywhere
    widget.set_model_card(nothing)
    _run(widget, qtbot)
    sentence = "Nothing to explain: no necrosis, edema or enhancing is predicted in this case"
    assert notices["error"][-1].startswith(sentence) and widget.status.text() == notices["error"][-1]
    assert widget.progress_bar.value() == 0 and widget.run_button.isEnabled()
