"""Small helpers for Qt controls that several widgets share."""

from __future__ import annotations


def check_quietly(button, checked: bool) -> None:
    """Set a checkable button's state without emitting its signals (the caller already did what a click would)."""
    if button.isChecked() != checked:
        button.blockSignals(True)
        button.setChecked(checked)
        button.blockSignals(False)
