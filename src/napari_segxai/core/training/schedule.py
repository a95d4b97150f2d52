"""When to update how much, and when to save: the learning-rate schedule and checkpoint placement."""

from __future__ import annotations

import math


def learning_rate(step_index: int, fraction: float, config: dict) -> float:
    """The learning rate of update ``step_index`` (0-based) at ``fraction`` (0..1) of the schedule's horizon."""
    base = float(config["optimizer"]["lr"])
    sched = config["schedule"]
    warmup = int(sched.get("warmup_steps", 0))
    if step_index < warmup:
        return base * (step_index + 1) / (warmup + 1)
    if sched["name"] == "constant":
        return base
    low = float(sched["min_lr"])
    t = min(max(fraction, 0.0), 1.0)
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


def next_checkpoint_step(saved: int, last: int, steps: float, checkpoints: int, warmup: int) -> float:
    """The update count at which intermediate checkpoint ``saved + 1`` of ``checkpoints`` is due in a run of ``steps`` updates.

    The checkpoints sit at 1/n, 2/n, ... of the updates after warm-up; when the expected number
    of updates drops during training, a checkpoint still comes at least half that spacing after
    the previous one (saved at update ``last``) and before the final weights, so they are never
    bunched (some may be left out: then it returns infinity).
    """
    start = min(warmup, steps)
    gap = (steps - start) / (2 * checkpoints)
    due = start + (saved + 1) * (steps - start) / checkpoints
    if saved:
        due = max(due, last + gap)
    return due if due <= steps - gap else math.inf
