"""The viewer's plane and its anatomical letters: a case opens axial, radiologically, with R/L, A/P, S/I on the canvas edges.

The world of a case's layers is RAS+ millimetres (see ``_layers``), so the plane and the letters
follow from ``core.orientation``: the plane sets napari's ``dims.order`` and the camera's 2D
orientation, and the letters are read back from whatever napari shows (the user's own transpose
or axis flips included). One :class:`ViewOrientation` per viewer (:meth:`ViewOrientation.of`); it
orients the viewer when the first layer of a case arrives. Only napari's models are touched, no Qt.
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import numpy as np
from napari.components.overlays import TextOverlay
from napari.utils.events import EmitterGroup

from ._layers import Key, layer_world_affine
from .core.orientation import RADIOLOGICAL, edge_letters, plane_of, plane_view

PREFERENCE = ("axial", "coronal", "sagittal")  # a case opens in the first of these napari can draw
DEFAULT_PLANE = PREFERENCE[0]
#: Screen edge -> the canvas position of its letter.
EDGE_POSITIONS = {"top": "top_center", "bottom": "bottom_center", "left": "middle_left", "right": "middle_right"}
LETTER_COLOR = "#ffd54f"
LETTER_SIZE = 16
_ORIENTATIONS: "weakref.WeakKeyDictionary[Any, ViewOrientation]" = weakref.WeakKeyDictionary()


def overlay_name(edge: str) -> str:
    """The key of an edge's letter among the viewer's canvas overlays."""
    return f"orientation_{edge}"


def shows_a_case(viewer) -> bool:
    """Whether a layer of the viewer belongs to a case (so its world is RAS+ mm)."""
    return any(Key.CASE in (layer.metadata or {}) for layer in viewer.layers)


def drawable_planes(viewer) -> tuple[str, ...]:
    """The planes napari can draw every case layer of ``viewer`` in.

    napari draws a 2D view only where the two world axes shown come from two voxel axes that are
    shown too; a case whose affine permutes its voxel axes against R/A/S (a coronal or sagittal
    acquisition used as the grid) then has one plane it can be drawn in, or none.
    """
    ndim = viewer.dims.ndim
    if ndim < 3:
        return ("axial",)
    drawable = []
    linear = [layer_world_affine(layer)[:ndim, :ndim] for layer in viewer.layers if Key.CASE in (layer.metadata or {})]
    for plane in PREFERENCE:
        shown = list(plane_view(plane).order(ndim)[-2:])
        if all(np.linalg.cond(matrix[np.ix_(shown, shown)]) < 1e6 for matrix in linear):
            drawable.append(plane)
    return tuple(drawable)


class ViewOrientation:
    """Keeps a viewer's plane in the radiological convention and its anatomical letters on the canvas edges."""

    def __init__(self, viewer, convention=RADIOLOGICAL):
        self._viewer = weakref.ref(viewer)
        self.convention = convention
        self.plane = DEFAULT_PLANE          # the plane a newly opened case is shown in
        self.events = EmitterGroup(source=self, plane=None)
        self._shown: Optional[str] = None
        for edge, position in EDGE_POSITIONS.items():
            viewer.canvas.overlays[overlay_name(edge)] = TextOverlay(
                text="", position=position, color=LETTER_COLOR, font_size=LETTER_SIZE, visible=False,
                gridded=True,  # in grid view every view (all share the camera) gets its letters
            )
        viewer.dims.events.order.connect(self.refresh)
        viewer.dims.events.ndisplay.connect(self.refresh)
        viewer.dims.events.ndim.connect(self.refresh)
        viewer.scene.camera.events.orientation.connect(self.refresh)
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self.refresh)
        if shows_a_case(viewer) and tuple(viewer.dims.order) == tuple(range(viewer.dims.ndim)):
            self._open_case()  # a case still in napari's default view
        self.refresh()

    @classmethod
    def of(cls, viewer) -> "ViewOrientation":
        """The viewer's one ViewOrientation (made on first use)."""
        viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugin widgets a proxy of the viewer
        found = _ORIENTATIONS.get(viewer)
        if found is None:
            found = _ORIENTATIONS[viewer] = cls(viewer)
        return found

    @property
    def viewer(self):
        return self._viewer()

    def show_plane(self, plane: str) -> None:
        """Show ``plane`` (axial, coronal or sagittal) in the convention, at the same world point, the whole case in view."""
        view = plane_view(plane, self.convention)
        viewer = self.viewer
        ndim = viewer.dims.ndim
        if ndim < 3 and plane != "axial":
            raise ValueError(f"A {ndim}D case has only the axial plane.")
        drawable = drawable_planes(viewer)
        if plane not in drawable:
            raise ValueError(
                f"napari cannot draw this case's {plane} slices: its voxels are stored along other axes than "
                f"R/A/S (a coronal or sagittal acquisition as the grid), and napari draws only the planes they span "
                f"({', '.join(drawable) or 'none'})."
            )
        self.plane = plane
        viewer.dims.order = view.order(ndim)
        viewer.scene.camera.orientation2d = view.orientation2d
        viewer.reset_view()
        self.refresh()

    def shown_plane(self) -> Optional[str]:
        """The plane napari shows now, or None (no case, a 3D view, or a view that is not of the RAS axes)."""
        axes = self._displayed_ras_axes()
        if axes is None:
            return None
        return "axial" if len(axes[0]) == 2 else plane_of(axes[0][0])

    def edges(self) -> Optional[dict[str, str]]:
        """The letter at each screen edge as napari shows the case now, or None when there is none to show."""
        axes = self._displayed_ras_axes()
        if axes is None:
            return None
        rows, columns = axes[1]
        vertical, horizontal = self.viewer.scene.camera.orientation2d
        letters = edge_letters(rows, columns, up=str(vertical) == "up", left=str(horizontal) == "left")
        return {edge: getattr(letters, edge) for edge in EDGE_POSITIONS}

    def _displayed_ras_axes(self):
        """(the sliced RAS axes, (rows, columns) RAS axes) of a 2D view of a case, else None."""
        viewer = self.viewer
        if viewer is None or viewer.dims.ndisplay != 2 or not shows_a_case(viewer) or viewer.dims.ndim < 2:
            return None
        lead = max(viewer.dims.ndim - 3, 0)
        order = [axis - lead for axis in viewer.dims.order]
        if any(axis < 0 for axis in order[-2:]):
            return None
        return tuple(a for a in order[:-2] if a >= 0), tuple(order[-2:])

    def refresh(self, *_: Any) -> None:
        """Put the letters of the view napari shows on the canvas edges (hide them without one); say when the plane changed."""
        viewer = self.viewer
        if viewer is None:
            return
        edges = self.edges()
        for edge in EDGE_POSITIONS:
            overlay = viewer.canvas.overlays[overlay_name(edge)]
            overlay.text = "" if edges is None else edges[edge]
            overlay.visible = edges is not None
        shown = self.shown_plane()
        if shown != self._shown:
            self._shown = shown
            self.events.plane(value=shown)

    def _inserted(self, event) -> None:
        """The first layer of a case: show the chosen plane; later layers: update the letters."""
        layer = event.value
        others = [other for other in self.viewer.layers if other is not layer]
        if Key.CASE in (layer.metadata or {}) and not any(Key.CASE in (o.metadata or {}) for o in others):
            self._open_case()
        else:
            self.refresh()

    def _open_case(self) -> None:
        """Show a newly opened case in the chosen plane, else in the first plane napari can draw it in."""
        drawable = drawable_planes(self.viewer)
        if self.plane in drawable:
            self.show_plane(self.plane)
        elif drawable:
            chosen = self.plane
            self.show_plane(drawable[0])
            self.plane = chosen  # the next case opens in the chosen plane again
        else:
            self.refresh()


def orient(viewer, plane: str = DEFAULT_PLANE) -> ViewOrientation:
    """Show ``plane`` of the case in ``viewer`` radiologically, with the letters; returns the viewer's ViewOrientation."""
    orientation = ViewOrientation.of(viewer)
    orientation.show_plane(plane)
    return orientation


def watch_current_viewer() -> None:
    """Orient cases the current viewer opens: napari hands a reader no viewer, and the one it reads into is current."""
    import napari

    viewer = napari.current_viewer()
    if viewer is not None:
        ViewOrientation.of(viewer)


__all__ = ["DEFAULT_PLANE", "ViewOrientation", "drawable_planes", "orient", "watch_current_viewer"]
