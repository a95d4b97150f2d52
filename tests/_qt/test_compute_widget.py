"""The dock widgets' base: a new widget is one subclass; Run, one job at a time, Cancel, errors and closing come with it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtWidgets import QSpinBox

from _viewer import open_case
from napari_segxai._layers import Key
from napari_segxai._qt.compute_widget import ComputeWidget

TIMEOUT_MS = 30_000


class MeanWidget(ComputeWidget):
    """A toy widget: the mean of each channel of the case, one progress step per channel."""

    noun = "mean"
    verb = "Averaging"
    has_card = has_device = False
    release = threading.Event()   # the worker waits for it before its last step

    def add_controls(self, form):
        self.digits = QSpinBox()
        self.digits.setRange(0, 6)
        form.addRow("Digits", self.digits)

    def job_options(self, case, card):
        if self.digits.value() == 0:
            raise ValueError("Zero digits say nothing; choose at least one.")
        return {"digits": self.digits.value()}

    @staticmethod
    def compute(case, card, *, digits, progress=None, should_cancel=None):
        from napari_segxai.core.progress import Cancelled

        means = []
        for c, channel in enumerate(case.channels):
            progress(c, len(case.channels))
            if c == len(case.channels) - 1:
                MeanWidget.release.wait(10)
            if should_cancel():
                raise Cancelled()
            means.append(round(float(np.mean(channel)), digits))
        return means

    def show_outcome(self, outcome):
        self.shown = outcome.result
        self.status.setText(f"Means of {outcome.case.name}: {outcome.result}")


def test_a_subclass_gets_the_case_the_run_panel_one_job_cancel_and_notifications(
    make_napari_viewer, qtbot, tiny_case, make_tiny_case, notices
):
    viewer = make_napari_viewer()
    widget = MeanWidget(viewer)
    assert not hasattr(widget, "card_path") and not hasattr(widget, "device")
    widget.digits.setValue(2)
    widget.run_button.click()                     # no case yet: one sentence, no job
    assert "image layers" in notices["error"][-1] and not widget.running
    open_case(viewer, tiny_case)
    assert widget.case_choice.currentText() == "Tiny_case_001"
    viewer.layers["t1"].metadata[Key.CASE] = "elsewhere"   # the case list follows the layers' metadata
    viewer.layers.move(0, 2)
    assert sorted(widget.case_choice.itemText(i) for i in range(widget.case_choice.count())) == [
        "Tiny_case_001", "elsewhere"]
    viewer.layers["t1"].metadata[Key.CASE] = "Tiny_case_001"
    viewer.layers.move(1, 0)
    assert widget.case_choice.count() == 1 and len(widget.case_layers()) == 4

    widget.digits.setValue(0)
    widget.run_button.click()
    assert notices["error"][-1] == "Zero digits say nothing; choose at least one." and not widget.running

    widget.digits.setValue(3)
    MeanWidget.release.clear()
    widget.run_button.click()
    assert widget.running
    widget.run_button.click()
    assert "A mean is already running" in notices["warning"][-1]
    MeanWidget.release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    channels = [viewer.layers[m].data for m in ("t1", "t1ce", "t2", "flair")]
    assert widget.shown == [pytest.approx(float(np.mean(c)), abs=1e-3) for c in channels]
    assert widget.progress_bar.value() == widget.progress_bar.maximum() == 4
    assert len(notices["error"]) == 2

    MeanWidget.release.clear()
    widget.run_button.click()
    widget.cancel_button.click()
    MeanWidget.release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.status.text() == "Cancelled." and notices["info"][-1] == "Averaging Tiny_case_001 was cancelled."
    assert widget.progress_bar.value() == 0 and widget.run_button.isEnabled()
    assert not widget.cancel_button.isEnabled()

    MeanWidget.release.clear()
    widget.shown = None
    widget.run_button.click()
    threading.Timer(0.2, MeanWidget.release.set).start()  # the job's last step comes while the widget closes
    widget.close()  # closing cancels the job, waits for its worker and stops following the layers
    assert not widget.running and widget.shown is None  # its result went nowhere, nothing was said
    assert notices["info"].count("Averaging Tiny_case_001 was cancelled.") == 1
    open_case(viewer, make_tiny_case(np.eye(4)))
    assert widget.case_choice.count() == 1 and len(widget.cases()) == 2


class FailingWidget(MeanWidget):
    """The toy widget whose job fails half way with a long user-facing sentence."""

    SENTENCE = ("Nothing to explain: no necrosis, edema or enhancing is predicted in this case; choose a region "
                "or a voxel to explain instead, or check that the case is a brain MRI the model was made for.")

    @staticmethod
    def compute(case, card, *, digits, progress=None, should_cancel=None):
        progress(1, 2)
        MeanWidget.release.wait(10)
        raise ValueError(FailingWidget.SENTENCE)


def test_an_error_shows_its_whole_sentence_resets_the_bar_and_run_works_again(
    make_napari_viewer, qtbot, tiny_case, notices
):
    viewer = make_napari_viewer()
    widget = FailingWidget(viewer)
    widget.digits.setValue(2)
    open_case(viewer, tiny_case)
    MeanWidget.release.clear()
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.progress_bar.value() == 1, timeout=TIMEOUT_MS)  # half way
    MeanWidget.release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"][-1] == FailingWidget.SENTENCE
    assert widget.status.text() == FailingWidget.SENTENCE and widget.status.wordWrap()
    assert widget.progress_bar.value() == 0
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    widget.run_button.click()                     # Run works again: a second job starts and fails the same way
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert notices["error"].count(FailingWidget.SENTENCE) == 2
