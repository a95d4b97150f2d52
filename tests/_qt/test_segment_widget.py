"""The Segment dock widget and the viewer picture, in a real napari viewer under Xvfb."""

from __future__ import annotations

import numpy as np
import yaml
from napari.layers import Labels

from napari_segxai._layers import case_from_layers, layer_world_affine
from napari_segxai._qt.segment_widget import SegmentWidget
from _viewer import open_case

TIMEOUT_MS = 120_000


def _card_variant(tiny_card, folder, **changes):
    """A copy of the tiny card with some top-level fields changed (weights stay the original's)."""
    card = yaml.safe_load(tiny_card.read_text())
    card["weights"] = str(tiny_card.parent / card["weights"])
    card.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "card.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def test_segment_widget_runs_refuses_a_second_run_cancels_and_reports_errors(
    make_napari_viewer, qtbot, tiny_case, tiny_card, lps_affine, notices, tmp_path, make_tiny_case
):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    from napari_segxai.core.io.paths import demo_model_card_path

    demo_card = demo_model_card_path()
    assert widget.card_path.text() == (str(demo_card) if demo_card.is_file() else "")
    chosen = widget.chosen_layers()
    assert [layer.name for layer in chosen] == ["t1", "t1ce", "t2", "flair"]
    n_layers = len(viewer.layers)

    # A card that cannot be loaded: one sentence, nothing started, the widget stays usable.
    widget.card_path.setText(str(_card_variant(tiny_card, tmp_path / "bad", architecture="NoSuchNet")))
    widget.run_button.click()
    assert len(notices["error"]) == 1 and "NoSuchNet" in notices["error"][0]
    assert "Traceback" not in notices["error"][0]
    assert not widget.running and len(viewer.layers) == n_layers

    # Weights that do not fit the architecture fail in the worker: reported the same way.
    kwargs = yaml.safe_load(tiny_card.read_text())["kwargs"]
    widget.card_path.setText(str(_card_variant(
        tiny_card, tmp_path / "mismatch", kwargs={**kwargs, "channels": [8, 16]}
    )))
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(notices["error"]) == 2 and "Traceback" not in notices["error"][1]
    assert len(viewer.layers) == n_layers

    # A good card: runs in the background, a second Run is refused while it runs.
    widget.card_path.setText(str(tiny_card))
    values = []
    widget.progress_bar.valueChanged.connect(values.append)
    widget.run_button.click()
    assert widget.running
    widget.run_button.click()
    assert len(notices["warning"]) == 1 and "already running" in notices["warning"][0]
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(notices["error"]) == 2, notices["error"]
    segmentation = viewer.layers["Tiny_case_001 segmentation"]
    assert isinstance(segmentation, Labels)
    assert segmentation.data.shape == chosen[0].data.shape
    np.testing.assert_allclose(layer_world_affine(segmentation), layer_world_affine(chosen[0]))
    np.testing.assert_allclose(layer_world_affine(segmentation), lps_affine)
    classes = yaml.safe_load(tiny_card.read_text())["classes"]
    assert list(segmentation.features["class"]) == [c["name"] for c in classes]
    for c in classes[1:]:
        expected = np.array([int(c["color"][i:i + 2], 16) / 255 for i in (1, 3, 5)])
        np.testing.assert_allclose(segmentation.colormap.map(c["label"])[:3], expected, atol=1e-3)
    assert set(np.unique(segmentation.data)) <= {c["label"] for c in classes}
    bar = widget.progress_bar
    assert bar.maximum() > 1 and bar.value() == bar.maximum()
    assert any(0 < v < bar.maximum() for v in values), values

    # Running again replaces the segmentation layer instead of adding another.
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    names = [layer.name for layer in viewer.layers]
    assert names.count("Tiny_case_001 segmentation") == 1 and len(names) == n_layers + 1

    # Cancel stops the run; the previous segmentation stays as it was.
    before = viewer.layers["Tiny_case_001 segmentation"]
    widget.run_button.click()
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert any("cancelled" in message for message in notices["info"])
    assert viewer.layers["Tiny_case_001 segmentation"] is before
    assert widget.status.text() == "Cancelled."
    assert len(notices["error"]) == 2

    # Opening a second case makes its layers the selection; their modalities come from metadata.
    open_case(viewer, make_tiny_case(np.diag([1.0, 1.0, 1.0, 1.0])))
    second = widget.chosen_layers()
    assert [layer.metadata["segxai_case"] for layer in second] == ["Tiny_case_002"] * 4
    assert case_from_layers(second).modalities == ("t1", "t1ce", "t2", "flair")


def test_viewer_picture_shows_the_case_and_its_labels(make_napari_viewer, tiny_case, tmp_path):
    from PIL import Image as PILImage

    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    centre = viewer.layers["Tiny_case_001 reference"].data_to_world([10, 6, 5])
    viewer.dims.set_point(range(3), centre)
    viewer.reset_view()
    picture = viewer.screenshot(str(tmp_path / "viewer.png"), canvas_only=True)
    assert picture.ndim == 3 and picture.shape[2] == 4
    rgb = picture[..., :3].astype(float)
    assert rgb.max() > 100 and rgb.std() > 10, "the viewer picture is blank"
    # Reference labels are drawn over the image: saturated pixels (red/green/yellow) are present.
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 80).sum() > 20
    assert PILImage.open(tmp_path / "viewer.png").size == (picture.shape[1], picture.shape[0])


def test_a_card_chosen_as_trusted_lets_its_pickled_network_load_and_no_other_card(
    make_napari_viewer, qtbot, tiny_case, tiny_card, notices, tmp_path
):
    import torch

    from napari_segxai.core.model.card import build_network
    from napari_segxai.core.model.loading import load_model_card

    whole = tmp_path / "whole.pt"
    torch.save(build_network(load_model_card(tiny_card)), whole)  # a pickle of the network object: runs code
    pickled = _card_variant(tiny_card, tmp_path / "pickled", weights=str(whole))
    other = _card_variant(tiny_card, tmp_path / "other", weights=str(whole))
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")

    widget.set_model_card(pickled)          # as the viewer's user chose it: the file's code must not run
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "trusted: true" in notices["error"][-1]
    assert not any(layer.metadata.get("segxai_role") == "segmentation" for layer in viewer.layers)
    widget.set_model_card(pickled, trusted=True)   # as segxai demo --trust-model hands it over
    assert widget.load_card().trusted
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert any(isinstance(layer, Labels) and layer.metadata.get("segxai_role") == "segmentation"
               for layer in viewer.layers)
    widget.set_model_card(other)            # trust given to one card is not given to another
    assert not widget.load_card().trusted


def test_a_torchscript_card_is_refused_in_the_viewer_until_it_is_chosen_as_trusted(
    make_napari_viewer, qtbot, tiny_case, tiny_card, notices, tmp_path
):
    import torch

    from napari_segxai.core.model.card import build_network
    from napari_segxai.core.model.loading import load_model_card

    archive = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(build_network(load_model_card(tiny_card))), str(archive))
    scripted = _card_variant(tiny_card, tmp_path / "scripted", architecture="torchscript", kwargs={},
                             weights=str(archive))
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")

    widget.set_model_card(scripted)          # an archive is a program: it must not run untrusted
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert "TorchScript program" in notices["error"][-1] and "trusted: true" in notices["error"][-1]
    assert not any(layer.metadata.get("segxai_role") == "segmentation" for layer in viewer.layers)
    widget.set_model_card(scripted, trusted=True)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert any(isinstance(layer, Labels) and layer.metadata.get("segxai_role") == "segmentation"
               for layer in viewer.layers)
