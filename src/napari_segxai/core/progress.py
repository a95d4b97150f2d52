"""Progress reporting and cancellation for long core loops.

Core loops take two optional callables: ``progress(done, total)`` and ``should_cancel()``.
They call :func:`step` between units of work; it reports and raises :class:`Cancelled`
when the caller asked to stop. The GUI and the CLI adapt these to their own progress bars.
"""

from __future__ import annotations

import contextlib
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
