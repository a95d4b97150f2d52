"""Progress reporting and cancellation for long core loops.

Core loops take two optional callables: ``progress(done, total)`` and ``should_cancel()``.
They call :func:`step` between units of work; it reports and raises :class:`Cancelled`
when the caller asked to stop. The GUI and the CLI adapt these to their own progress bars.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised inside a core loop when the caller asked it to stop."""


def step(
    done: int,
    total: int,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> None:
    """Report ``done`` of ``total`` units and stop with :class:`Cancelled` if asked to."""
    if should_cancel is not None and should_cancel():
        raise Cancelled(f"Cancelled after {done} of {total} steps.")
    if progress is not None:
        progress(done, total)
