"""Five SegXAI docks on one side: the window stays within the screen (docks join tabs), no control squashed."""

from __future__ import annotations


def test_five_docks_keep_the_window_within_the_screen(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QDockWidget

    from napari_segxai._qt.explain_widget import ExplainWidget
    from napari_segxai._qt.report_widget import ReportWidget
    from napari_segxai._qt.roi_widget import RoiWidget
    from napari_segxai._qt.segment_widget import SegmentWidget
    from napari_segxai._qt.trust_widget import TrustWidget

    viewer = make_napari_viewer(show=True)
    main = viewer.window._qt_window
    room = main.screen().availableGeometry().height()
    for kind in (SegmentWidget, ExplainWidget, RoiWidget, TrustWidget, ReportWidget):
        viewer.window.add_dock_widget(kind(viewer), name=kind.__name__, area="right")
        qtbot.wait(50)
    qtbot.waitUntil(lambda: main.frameGeometry().height() <= room, timeout=5000)
    docks = [d for d in main.findChildren(QDockWidget) if d.windowTitle() in
             ("SegmentWidget", "ExplainWidget", "RoiWidget", "TrustWidget", "ReportWidget")]
    assert len(docks) == 5 and any(main.tabifiedDockWidgets(d) for d in docks)
    main.grab().save("/tmp/five_docks.png")  # the picture the user sees (looked at)
