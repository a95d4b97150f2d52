"""Closing the viewer while a widget computes stops the job first and closes cleanly (it used to crash napari)."""

from __future__ import annotations

import pytest

from _viewer import open_case


@pytest.mark.parametrize("kind", ["segment", "explain", "trust", "report"])
def test_closing_the_viewer_mid_job_cancels_it_and_closes_cleanly(make_napari_viewer, qtbot, tiny_case, tiny_card,
                                                                  kind, tmp_path, monkeypatch):
    from napari_segxai._qt.explain_widget import ExplainWidget
    from napari_segxai._qt.report_widget import ReportWidget
    from napari_segxai._qt.segment_widget import SegmentWidget
    from napari_segxai._qt.trust_widget import TrustWidget

    monkeypatch.setenv("HOME", str(tmp_path))  # the report widget's default folder
    widget_class = {"segment": SegmentWidget, "explain": ExplainWidget, "trust": TrustWidget,
                    "report": ReportWidget}[kind]
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget, name=kind)
    widget.set_model_card(tiny_card)
    qtbot.wait(50)
    widget.run_button.click()
    assert widget.jobs.running
    viewer.close()  # File > Close Window, or the close button
    assert not widget.jobs.running  # the worker stopped before the window went away
