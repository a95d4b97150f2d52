"""One background core job at a time for a dock widget: worker thread, progress, cancel, notifications."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from napari.qt.threading import create_worker
from napari.utils import cancelable_progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton


@dataclass(frozen=True)
class Outcome:
    """What a job ended with: a result, a user-facing error sentence, or a cancel."""

    case: Any = None
    card: Any = None
    result: Any = None
    error: Optional[str] = None
    cancelled: bool = False


def run_job(compute: Callable, case, card, *, description: str, memory_hint: str,
            progress, should_cancel) -> Outcome:
    """Call ``compute(progress=, should_cancel=)`` in the worker; user mistakes become an error sentence."""
    import torch

    from ..core.progress import Cancelled

    try:
        result = compute(progress=progress, should_cancel=should_cancel)
    except Cancelled:
        return Outcome(case=case, card=card, cancelled=True)
    except (MemoryError, torch.OutOfMemoryError):
        return Outcome(case=case, card=card, error=f"{description} ran out of memory; {memory_hint}.")
    except (ValueError, OSError) as err:
        return Outcome(case=case, card=card, error=str(err) or type(err).__name__)
    return Outcome(case=case, card=card, result=result)


class JobRunner(QObject):
    """Runs one core job at a time off the main thread and shows its progress on a widget's controls."""

    advanced = Signal(int, int)  # (done, total) from the worker thread to the main thread
    ended = Signal()  # a job ended, whatever with (main thread, after its result was handed on)

    def __init__(self, parent: QObject, progress_bar: QProgressBar, status: QLabel,
                 cancel_button: QPushButton, *, noun: str):
        super().__init__(parent)
        self.progress_bar, self.status, self.cancel_button = progress_bar, status, cancel_button
        self.noun = noun  # "segmentation", "explanation": used in messages
        self._worker = None
        self._closing = False  # the window is closing: results go nowhere
        self._shutting_down = False  # shutdown() is waiting for the worker (the events it processes may close again)
        self._cancel_requested = threading.Event()
        self._napari_progress: Optional[cancelable_progress] = None
        self._latest: Optional[tuple[int, int]] = None  # progress not shown yet (see _on_progress)
        self._showing = False  # _on_progress is drawing (napari's bar processes events meanwhile)
        self.advanced.connect(self._on_progress)
        cancel_button.clicked.connect(self.cancel)
        cancel_button.setEnabled(False)

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return self._worker is not None

    def refuse_if_running(self) -> bool:
        """Warn and return True when a job runs already (two jobs never write the same layers)."""
        if self.running:
            show_warning(f"A {self.noun} is already running; wait for it or press Cancel.")
        return self.running

    def start(self, compute: Callable, case, card, *, description: str, memory_hint: str,
              on_result: Callable[[Outcome], None]) -> None:
        """Run ``compute`` in a worker; ``on_result`` gets a successful :class:`Outcome` on the main thread.

        ``description`` ("Segmenting <case> with <card>") names the job in the progress bar and messages.
        """
        self._cancel_requested.clear()
        napari_progress = cancelable_progress(total=0, desc=description, cancel_callback=self.cancel)
        self._napari_progress = napari_progress
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status.setText(f"{description}…")
        self.cancel_button.setEnabled(True)

        def should_cancel() -> bool:
            return self._cancel_requested.is_set() or napari_progress.is_canceled

        worker = create_worker(
            run_job, compute, case, card, description=description, memory_hint=memory_hint,
            progress=self.advanced.emit, should_cancel=should_cancel, _start_thread=False,
        )
        worker.returned.connect(lambda outcome: self._on_returned(outcome, description, on_result))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Ask the running job to stop at its next step."""
        if self.running:
            self._cancel_requested.set()
            self.status.setText("Cancelling…")

    def _on_progress(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` on the widget's bar and on napari's activity bar.

        napari's bar processes Qt events while it draws, which delivers the next queued progress
        signal inside this call. A nested call only leaves its values for the outer one to draw, so a
        burst of signals (a worker stepping fast while the window is busy or closing) cannot recurse
        without bound. Nothing is drawn once the window is closing.
        """
        if self._closing:
            return
        self._latest = (done, total)
        if self._showing:
            return
        self._showing = True
        try:
            while self._latest is not None:
                (done, total), self._latest = self._latest, None
                self._show_progress(done, total)
        finally:
            self._showing = False

    def _show_progress(self, done: int, total: int) -> None:
        total = max(int(total), 1)
        if self.progress_bar.maximum() != total:
            self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(min(int(done), total))
        bar = self._napari_progress
        if bar is not None:
            if bar.total != total:
                bar.total = total
            bar.update(min(int(done), total) - bar.n)

    def shutdown(self, timeout_s: float = 60.0) -> bool:
        """Cancel the running job and wait for its worker to stop (the window is closing); whether it stopped.

        The worker stops at its next step; until then Qt events are processed so that its signals arrive
        while the widgets they touch still exist. Its result, if any, is dropped.
        """
        import time

        from qtpy.QtWidgets import QApplication

        self._closing = True
        if not self.running or self._shutting_down:  # a Close seen again while waiting: the outer wait goes on
            return not self.running
        self._cancel_requested.set()
        self._shutting_down = True
        try:
            deadline = time.monotonic() + timeout_s
            while self.running and time.monotonic() < deadline:
                QApplication.processEvents()
                time.sleep(0.01)
        finally:
            self._shutting_down = False
        return not self.running

    def _on_returned(self, outcome: Outcome, description: str, on_result: Callable[[Outcome], None]) -> None:
        """Hand a result to the widget (main thread), or report why there is none."""
        self._latest = None  # progress still waiting to be drawn is older than this end: the bar shows the end
        if self._closing:
            return
        if outcome.cancelled:
            self._reset_progress()
            self.status.setText("Cancelled.")
            show_info(f"{description} was cancelled.")
            return
        if outcome.error is not None:
            self._reset_progress()
            self.status.setText(outcome.error)  # the whole sentence, wrapped; the notification may be cut off
            show_error(outcome.error)
            return
        self.progress_bar.setValue(self.progress_bar.maximum())
        on_result(outcome)

    def _reset_progress(self) -> None:
        """Empty the widget's bar: a job that ended without a result leaves no half-full bar behind."""
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)

    def _on_finished(self) -> None:
        """Tidy up after the worker, whatever it ended with."""
        self._worker = None
        self.cancel_button.setEnabled(False)
        if self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None
        self.ended.emit()
