"""Progress reporting and cancellation for long core loops.

Core loops take two optional callables: ``progress(done, total)`` and ``should_cancel()``.
They call :func:`step` between units of work; it reports and raises :class:`Cancelled`
when the caller asked to stop. The GUI and the CLI adapt these to their own progress bars.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Optional

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


def span(progress: Optional[ProgressFn], start: float, end: float) -> Optional[ProgressFn]:
    """A callback that reports its ``(done, total)`` as the share ``start``..``end`` of ``progress``'s bar (0..1000)."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(int(1000 * (start + (end - start) * done / max(total, 1))), 1000)

    return report


#: A batch of perturbed copies is sized so that one takes about this long: the bar moves and Cancel is heard.
PACE_SECONDS = 1.5


def paced(
    n: int,
    largest: int,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
    seconds: Optional[float] = None,
) -> Iterator[slice]:
    """Slices covering ``range(n)`` in batches of at most ``largest``, each taking about ``seconds``.

    The first batch has one item; each next one is sized from the time per item so far, so progress
    is reported (and cancel checked) every ``seconds`` (default PACE_SECONDS) or so of work whatever the item costs.
    """
    seconds = PACE_SECONDS if seconds is None else seconds
    start, size, spent = 0, 1, 0.0
    while start < n:
        step(start, n, progress, should_cancel)
        stop = min(n, start + size)
        began = time.perf_counter()
        yield slice(start, stop)
        spent += time.perf_counter() - began
        start = stop
        per_item = spent / start
        size = max(1, min(int(largest), int(seconds / per_item) if per_item > 0 else int(largest)))
    step(n, n, progress, None)


@contextlib.contextmanager
def cancel_inside(network: Any, should_cancel: Optional[CancelFn]) -> Iterator[Any]:
    """Check ``should_cancel`` after every layer of a torch ``network``, forward and backward, while inside.

    A forward or backward pass over a large window can take seconds; checking only between
    passes would let a cancel wait that long. Raises :class:`Cancelled` from inside the pass.
    """
    if should_cancel is None:
        yield network
        return

    def check(_grad=None) -> None:
        if should_cancel():
            raise Cancelled("Cancelled inside a pass through the network.")

    def after_layer(_module, _inputs, output) -> None:
        check()
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if getattr(tensor, "requires_grad", False):
                tensor.register_hook(check)  # runs when the backward pass reaches this layer

    import torch

    # TorchScript modules take no hooks: a scripted network is checked only between passes.
    layers = [m for m in network.modules()
              if not any(True for _ in m.children()) and not isinstance(m, torch.jit.ScriptModule)]
    handles = [layer.register_forward_hook(after_layer) for layer in layers]
    try:
        yield network
    finally:
        for handle in handles:
            handle.remove()
