"""The Trust dock widget in a real napari viewer under Xvfb: the core's numbers, the plot, following Explain, cancel, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_segxai._qt import trust_widget
from napari_segxai._qt.explain_display import relevance_layer_data
from napari_segxai._qt.explain_widget import ExplainWidget
from napari_segxai._qt.trust_widget import TrustWidget
from _cards import write_card
from _viewer import open_case
from napari_segxai.core.attribution import available_methods, explain_case
from napari_segxai.core.io.nifti import load_case
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.trust import QualitySettings, case_problem, quality_metrics, randomisation_test

TIMEOUT_MS = 120_000
CLASSES = ("necrosis", "edema", "enhancing")
COST = dict(max_steps=2, n_subsets=6, deletion_steps=4, noise_samples=2)


@pytest.fixture
def seen(notices, monkeypatch):
    """The napari notifications, the Trust widget's own included."""
    for kind in notices:
        monkeypatch.setattr(trust_widget, f"show_{kind}", notices[kind].append, raising=False)
    return notices


def _widget(viewer, card, **cost):
    widget = TrustWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Trust")
    widget.set_model_card(card)
    for name, value in {**COST, **cost}.items():
        getattr(widget, name).setValue(value)
    widget.device.setCurrentText("cpu")
    return widget


def test_trust_widget_shows_the_core_numbers_and_the_randomisation_plot(
    make_napari_viewer, qtbot, tiny_case, tiny_card, tmp_path, seen, monkeypatch
):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = _widget(viewer, tiny_card)
    assert widget.case_choice.currentText() == "Tiny_case_001"
    assert [widget.method.itemText(i) for i in range(widget.method.count())] == list(available_methods())
    assert widget.method.currentText() == "saliency"  # no Explain widget docked

    values = []
    widget.progress_bar.valueChanged.connect(values.append)
    widget.run_button.click()
    assert widget.running
    widget.run_button.click()
    assert len(seen["warning"]) == 1 and "already running" in seen["warning"][0]
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert seen["error"] == []
    assert any(0 < v < widget.progress_bar.maximum() for v in values), values
    assert widget.cost.text().startswith("≈") and "forward" in widget.cost.toolTip()   # estimated before the work
    assert widget.last.cost is not None and "faithfulness" in widget.cost.toolTip()

    problem = case_problem(load_case(tiny_case), load_model_card(tiny_card), device="cpu")
    sanity = randomisation_test(problem, ["saliency"], modes=("cascading",), max_steps=2)
    quality = quality_metrics(problem, ["saliency"], settings=QualitySettings(n_subsets=6, deletion_steps=4, noise_samples=2))
    assert widget.table.columnCount() == 3
    assert [widget.table.horizontalHeaderItem(c).text() for c in range(3)] == list(CLASSES)
    for verdict, row in zip(sanity.verdicts(), quality.rows):
        name = verdict.class_name
        assert widget.value_at("randomisation_passes", name) == float(verdict.passes)
        for measure in ("spearman", "ssim", "top_k"):
            assert widget.value_at(f"randomisation_{measure}", name) == pytest.approx(getattr(verdict, measure), rel=1e-6)
        for measure in ("faithfulness", "deletion_auc", "deletion_auc_random", "max_sensitivity", "above_threshold"):
            assert widget.value_at(measure, name) == pytest.approx(getattr(row, measure), rel=1e-6, nan_ok=True)
        assert widget.value_at("seconds_explain", name) > 0
        cell = widget.table.item([m for m, _, _ in widget.measures].index("randomisation_spearman"), CLASSES.index(name)).text()
        assert cell == f"{verdict.spearman:.3f}"
        verdict_cell = widget.table.item(0, CLASSES.index(name)).text()
        assert verdict_cell == ("passes" if verdict.passes else "fails")
    assert "saliency on Tiny_case_001" in widget.status.text() and "predicted" in widget.status.text()

    # Save: the numbers on screen, as segxai trust writes them, into a folder made for it.
    assert widget.save_button.isEnabled()
    files = widget.save(tmp_path / "check")
    assert sorted(p.name for p in (tmp_path / "check").iterdir()) == [
        "deletion.png", "metrics.csv", "quality.csv", "sanity.csv", "sanity.png", "sanity_verdicts.csv"]
    with open(files["quality"]) as handle:
        saved = list(csv.DictReader(handle))
    assert [r["class_name"] for r in saved] == list(CLASSES) and {r["case"] for r in saved} == {"Tiny_case_001"}
    for r in saved:
        assert float(r["randomisation_spearman"]) == widget.value_at("randomisation_spearman", r["class_name"])
    (tmp_path / "clicked").mkdir()
    monkeypatch.setattr(trust_widget.QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: str(tmp_path / "clicked")))
    widget.save_button.click()
    assert seen["info"][-1] == f"Saved 6 tables and plots of the trust check in {tmp_path / 'clicked'}."
    assert len(list((tmp_path / "clicked").iterdir())) == 6 and seen["error"] == []

    # The plot: one cascading panel for the chosen class, the method's curve through the core's rows.
    def curve(class_name, measure):
        rows = sorted((r.depth, getattr(r, measure)) for r in sanity.rows if r.class_name == class_name)
        return [d for d, _ in rows], [v for _, v in rows]

    (axes,) = widget.chart.figure.axes
    (line,) = [l for l in axes.get_lines() if l.get_label() == "saliency"]
    depths, spearman = curve("necrosis", "spearman")
    assert list(line.get_xdata()) == depths == [0, 1, 3]  # 3 weight layers, 2 depths: the last layer, then all
    np.testing.assert_allclose(line.get_ydata(), spearman, rtol=1e-6)
    assert "necrosis: cascading" == axes.get_title()
    assert any(l.get_label() == "pass below" for l in axes.get_lines())
    widget.plot_class.setCurrentText("enhancing")
    widget.plot_measure.setCurrentIndex(widget.plot_measure.findData("ssim"))
    (axes,) = widget.chart.figure.axes
    (line,) = [l for l in axes.get_lines() if l.get_label() == "saliency"]
    np.testing.assert_allclose(line.get_ydata(), curve("enhancing", "ssim")[1], rtol=1e-6)
    assert axes.get_title() == "enhancing: cascading"


def test_trust_widget_follows_the_method_of_the_explain_widget_and_its_maps(
    make_napari_viewer, tiny_case, tiny_card, seen
):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    explain = ExplainWidget(viewer)
    viewer.window.add_dock_widget(explain, name="Explain")
    explain.method.setCurrentText("gradient_x_input")
    widget = _widget(viewer, tiny_card)
    assert widget.method.currentText() == "gradient_x_input"
    # Relevance layers arriving in the viewer set the method and its parameters: the map on screen is checked.
    case, card = load_case(tiny_case), load_model_card(tiny_card)
    result = explain_case(case, card, method="integrated_gradients", device="cpu", steps=3, classes=[2])
    for data, kwargs, _ in relevance_layer_data(result, case):
        viewer.add_image(data, **kwargs)
    assert widget.method.currentText() == "integrated_gradients"
    assert widget.parameters.values()["steps"] == 3
    assert widget.case_choice.currentText() == "Tiny_case_001"


def test_trust_widget_checks_the_point_the_explain_widget_explains(make_napari_viewer, qtbot, tiny_case, tiny_card, seen):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    explain = ExplainWidget(viewer)
    viewer.window.add_dock_widget(explain, name="Explain")
    widget = _widget(viewer, tiny_card, max_steps=1, noise_samples=1)
    widget.target.setCurrentIndex(widget.target.findData("explain"))
    assert "Explain widget's target" in widget.status.text()
    explain.target.setCurrentIndex(explain.target.findData("voxel"))
    widget.run_button.click()       # Explain has no point yet: its sentence, no job
    assert not widget.running and "No point is chosen" in seen["error"][-1]

    case = load_case(tiny_case)
    voxel = np.argwhere(case.label > 0)[0]
    explain.set_point(viewer.layers[0].data_to_world(voxel))
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(seen["error"]) == 1
    target = widget.last.problem.target
    assert target.kind == "voxel" and target.voxel_counts == (1, 1, 1)
    assert "over the voxel" in widget.status.text()
    assert widget.value_at("randomisation_passes", "edema") in (0.0, 1.0)
    explain.close()                 # a closed Explain widget names no target any more
    widget.run_button.click()
    assert not widget.running and "No Explain widget" in seen["error"][-1]


def test_cancel_stops_the_check_and_bad_states_give_a_notification(
    make_napari_viewer, qtbot, tiny_case, tiny_card, tmp_path, seen
):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_card)
    widget.run_button.click()  # no case yet
    assert not widget.running and len(seen["error"]) == 1 and "image layers" in seen["error"][0]
    widget.target.setCurrentIndex(widget.target.findData("explain"))
    open_case(viewer, tiny_case)
    widget.run_button.click()  # no Explain widget to take the target from
    assert not widget.running and len(seen["error"]) == 2 and "No Explain widget" in seen["error"][-1]
    widget.target.setCurrentIndex(widget.target.findData("predicted"))
    del seen["error"][1:]

    widget.max_steps.setValue(3)
    widget.noise_samples.setValue(8)
    reached = []

    def cancel_in_randomisation(value):  # past the segmentation stage: the core's loops must stop
        if value > 0.2 * widget.progress_bar.maximum() and not reached:
            reached.append(value)
            widget.cancel()

    widget.progress_bar.valueChanged.connect(cancel_in_randomisation)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.text() == "Cancelled."
    assert any("cancelled" in message for message in seen["info"])
    assert widget.last is None and widget.table.columnCount() == 0
    assert reached and len(seen["error"]) == 1
    assert not widget.save_button.isEnabled()
    with pytest.raises(ValueError, match="no trust check to save"):
        widget.save(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()

    # A card that expects other modalities, and a card file that is missing: one sentence each, no job.
    widget.progress_bar.valueChanged.disconnect(cancel_in_randomisation)
    widget.set_model_card(write_card(tmp_path / "other", modalities=["dwi", "adc"]))
    widget.run_button.click()
    assert not widget.running and len(seen["error"]) == 2 and "dwi" in seen["error"][-1]
    widget.set_model_card(tmp_path / "missing.yaml")
    assert "missing.yaml" in widget.card_info.text()
    widget.run_button.click()
    assert not widget.running and len(seen["error"]) == 3


def test_a_long_check_is_asked_first_and_declined_runs_nothing(make_napari_viewer, qtbot, tiny_case, tiny_card,
                                                                 seen, monkeypatch):
    from napari_segxai._qt import cost_gate

    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = _widget(viewer, tiny_card)
    asked = []
    monkeypatch.setattr(cost_gate, "ask", lambda parent, cost: asked.append(cost) or False)
    widget.gate.confirm_over_s = 0.0
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(asked) == 1 and asked[0].noun == "trust check" and asked[0].seconds > 0
    assert widget.status.text() == "Cancelled." and widget.last is None and widget.table.columnCount() == 0
    assert widget.cost.text().startswith("≈")


def test_parameter_values_put_into_the_form_come_back_for_every_registered_method(qtbot):
    from napari_segxai._qt.explain_parameters import ParameterForm
    from napari_segxai.core.attribution import method_class

    form = ParameterForm()
    qtbot.addWidget(form)
    for name in available_methods():
        form.set_method(name)
        wanted = {}
        for key, parameter in method_class(name).parameters.items():
            default = parameter.default
            if parameter.choices is not None:
                wanted[key] = parameter.choices[-1]
            elif isinstance(default, bool):
                wanted[key] = not default
            elif isinstance(default, (int, float)):
                top = parameter.maximum if parameter.maximum is not None else default + 2
                wanted[key] = type(default)(min(default + 1, top))
            else:
                wanted[key] = default
        form.set_values({**wanted, "not_a_parameter": 1})
        assert form.values() == wanted, name
