"""The "View plane" dock widget: axial, coronal or sagittal, radiologically, the canvas letters following.

The buttons set the plane through the viewer's :class:`.._orientation.ViewOrientation` and follow
whatever napari shows (its own transpose or axis-order changes too); none is checked in a 3D view
or a view of other axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from napari.utils.notifications import show_error
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .._orientation import PREFERENCE, ViewOrientation
from ..core.orientation import RADIOLOGICAL

if TYPE_CHECKING:
    import napari

CONVENTION_NOTE = "Radiological: the patient's right on the screen's left."


class PlaneChoice(QWidget):
    """Three buttons, Axial / Coronal / Sagittal, that set the viewer's plane and show the plane it is in."""

    # Unquoted on purpose: napari passes the viewer to a dock widget annotated exactly "napari.viewer.Viewer".
    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer = viewer
        self.orientation = ViewOrientation.of(viewer)
        self.group = QButtonGroup(self)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        self.buttons: dict[str, QPushButton] = {}
        for plane in PREFERENCE:
            top, left = RADIOLOGICAL[plane]
            button = QPushButton(plane.capitalize())
            button.setCheckable(True)
            button.setToolTip(f"Show {plane} slices: {top} at the top, {left} on the left.")
            button.clicked.connect(lambda _=False, p=plane: self.choose(p))
            self.group.addButton(button)
            row.addWidget(button)
            self.buttons[plane] = button
        note = QLabel(CONVENTION_NOTE)
        note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(note)
        layout.addStretch(1)
        self.orientation.events.plane.connect(self.follow)
        self.destroyed.connect(lambda *_: self.orientation.events.plane.disconnect(self.follow))
        self.follow()

    def choose(self, plane: str) -> None:
        """Show ``plane`` (a button's click)."""
        try:
            self.orientation.show_plane(plane)
        except ValueError as err:
            show_error(str(err))
            self.follow()

    def follow(self, *_: Any) -> None:
        """Check the button of the plane the viewer shows (none when it shows no plane of a case)."""
        shown = self.orientation.shown_plane()
        self.group.setExclusive(False)
        for plane, button in self.buttons.items():
            button.setChecked(plane == shown)
        self.group.setExclusive(True)
