"""A burst of progress signals (a worker stepping fast while the window is busy) is drawn without recursing.

napari's progress bar processes Qt events while it draws, so each queued progress signal used to be
handled inside the previous one: a few thousand queued steps overflowed Python's stack (seen when
the viewer was closed mid-report under load).
"""

from __future__ import annotations

import sys
import threading
import time


def test_a_burst_of_queued_progress_is_drawn_once_without_recursion(make_napari_viewer, qtbot):
    from napari_segxai._qt.segment_widget import SegmentWidget

    viewer = make_napari_viewer(show=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="segment")
    steps = 2 * sys.getrecursionlimit()
    emitted = threading.Event()
    release = threading.Event()

    def compute(progress, should_cancel):
        for done in range(1, steps + 1):
            progress(done, steps)
        emitted.set()
        release.wait(30)
        return "done"

    results = []
    widget.jobs.start(compute, None, None, description="Stepping", memory_hint="none",
                      on_result=lambda outcome: results.append(outcome.result))
    assert emitted.wait(30)   # every step queued while the main thread did not process events
    release.set()
    qtbot.waitUntil(lambda: not widget.jobs.running, timeout=30_000)
    assert results == ["done"]
    assert widget.jobs.progress_bar.maximum() == widget.jobs.progress_bar.value() == steps
