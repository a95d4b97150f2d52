"""The Explain widget's trust badge: "not checked", then Check measures the verdict and the badge updates."""

from __future__ import annotations

from _viewer import open_case
from napari_segxai._qt.explain_widget import ExplainWidget
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.trust.verdict import NOT_CHECKED, read_verdict


def explain_widget(make_napari_viewer, case, card) -> ExplainWidget:
    """An Explain dock in a shown viewer with the case open and the card chosen (the badge reads the environment)."""
    viewer = make_napari_viewer(show=True)
    open_case(viewer, case)
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Explain")
    widget.set_model_card(card)
    return widget


def test_the_badge_says_not_checked_then_check_measures_and_every_map_shows_it(
        make_napari_viewer, qtbot, tiny_case, tiny_card, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    widget = explain_widget(make_napari_viewer, tiny_case, tiny_card)
    assert widget.trust.label.text() == NOT_CHECKED and widget.trust.check_button.isEnabled()

    widget.trust.check_button.click()
    assert widget.trust.checking and widget.trust.progress_bar.isVisible()
    qtbot.waitUntil(lambda: not widget.trust.checking, timeout=300_000)
    assert not widget.trust.progress_bar.isVisible()
    verdict = read_verdict(load_model_card(tiny_card), "saliency")
    assert verdict is not None and widget.trust.label.text() == verdict.badge()
    assert not widget.trust.check_button.isEnabled()
    widget.method.setCurrentText("gradient_x_input")  # another method: not measured yet
    assert widget.trust.label.text() == NOT_CHECKED and widget.trust.check_button.isEnabled()
    widget.method.setCurrentText("saliency")

    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert f"Trust: {verdict.badge()}." in widget.status.text()
    widget.grab().save(str(tmp_path / "explain_trust.png"))  # the picture the user sees (looked at)
    import shutil

    shutil.copy(tmp_path / "explain_trust.png", "/tmp/explain_trust.png")


def test_the_check_starts_by_itself_after_the_first_map_and_runs_beside_explanations(
        make_napari_viewer, qtbot, tiny_case, tiny_card, monkeypatch):
    monkeypatch.setenv("SEGXAI_AUTO_TRUST", "1")
    widget = explain_widget(make_napari_viewer, tiny_case, tiny_card)
    assert widget.trust.auto.isChecked() and not widget.trust.checking

    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert widget.trust.checking, "no check started after the first map of an unchecked method"
    assert widget.refresh_trust() == "being checked" and "Checking the trust of saliency" in widget.trust.label.text()
    widget.run_button.click()  # the check has its own worker: explaining goes on meanwhile
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    qtbot.waitUntil(lambda: not widget.trust.checking, timeout=300_000)
    verdict = read_verdict(load_model_card(tiny_card), "saliency")
    assert verdict is not None and widget.trust.label.text() == verdict.badge()


def test_stop_ends_the_check_and_keeps_nothing(make_napari_viewer, qtbot, tiny_case, tiny_card, monkeypatch):
    widget = explain_widget(make_napari_viewer, tiny_case, tiny_card)
    assert not widget.trust.auto.isChecked()  # SEGXAI_AUTO_TRUST=0 (the suite's setting) unticks it

    widget.trust.check_button.click()
    widget.trust.stop_button.click()
    qtbot.waitUntil(lambda: not widget.trust.checking, timeout=30_000)
    assert read_verdict(load_model_card(tiny_card), "saliency") is None
    assert widget.trust.label.text() == NOT_CHECKED and widget.trust.check_button.isEnabled()


def test_a_map_shown_from_elsewhere_starts_the_check_once_its_layers_are_in(
        make_napari_viewer, qtbot, tiny_case, tiny_card, monkeypatch):
    """``segxai demo`` hands the widget a finished map (show_result adds its layers at once)."""
    from napari_segxai.core.attribution import explain_case
    from napari_segxai.core.io.nifti import load_case

    monkeypatch.setenv("SEGXAI_AUTO_TRUST", "1")
    widget = explain_widget(make_napari_viewer, tiny_case, tiny_card)
    case, card = load_case(tiny_case), load_model_card(tiny_card)
    relevance = explain_case(case, card, method="saliency", classes=[1, 2])

    layers = widget.show_result(case, card, relevance)
    assert layers and widget.trust.checking
    qtbot.wait(200)  # the show_outcome timer fires after the layers are in: nothing is added twice
    qtbot.waitUntil(lambda: not widget.trust.checking, timeout=300_000)
    assert read_verdict(card, "saliency") is not None
