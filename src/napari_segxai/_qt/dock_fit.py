"""Docks that fit the screen: a SegXAI dock that would make the window taller than the screen joins a tab.

napari stacks dock widgets of one side on top of each other and grows its window to fit their
minimum heights; with five SegXAI docks that is taller than a laptop screen, and Qt squashes the
lists and charts inside. When a dock is shown and the window no longer fits the screen it is shown
on, the dock is tabified with the last visible dock on its side and the window is brought back
within the screen, so no control is hidden.
"""

from __future__ import annotations

from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def fit_to_screen(widget: QWidget) -> bool:
    """Tabify ``widget``'s dock when its window outgrows the screen, then bring the window within it; whether it tabified."""
    from qtpy.QtCore import QTimer

    dock, main = _dock_of(widget), widget.window()
    screen = main.screen() if main is not None else None
    if dock is None or not isinstance(main, QMainWindow) or screen is None or dock.isFloating():
        return False
    room = screen.availableGeometry().height()
    if max(main.frameGeometry().height(), main.minimumSizeHint().height()) <= room:
        return False
    area = main.dockWidgetArea(dock)
    others = [d for d in main.findChildren(QDockWidget) if d is not dock and d.isVisible() and not d.isFloating()
              and main.dockWidgetArea(d) == area]
    tabified = bool(others) and dock not in main.tabifiedDockWidgets(others[-1])
    if tabified:
        main.tabifyDockWidget(others[-1], dock)
        dock.raise_()
    QTimer.singleShot(0, lambda: _within(main, room))  # once the tabs are laid out
    return tabified


def _within(main: QMainWindow, room: int) -> None:
    """Shrink the window to the screen's height (its frame included) when its contents allow it."""
    frame = main.frameGeometry().height() - main.height()
    if main.frameGeometry().height() > room and main.minimumSizeHint().height() + frame <= room:
        main.resize(main.width(), room - frame)
