"""Which way a slice of a RAS+ world is shown: the plane's axes on screen and the anatomical letters at its edges.

The world of every case is RAS+ millimetres (NIfTI's convention; DICOM cases are converted to it):
world axis 0 runs towards the patient's Right, 1 towards Anterior, 2 towards Superior. A view of a
plane shows two world axes, one down the screen's rows and one across its columns, each running
up or down, left or right. :data:`RADIOLOGICAL` is the convention the case report's slices use
(``thumbnails.thumbnail``) and the viewer opens in: the patient's right on the left of the screen
in axial and coronal views, anterior at the top of axial views, superior at the top of coronal and
sagittal ones, anterior on the left of sagittal ones (the patient faces the screen's left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

#: The anatomical direction each RAS+ world axis runs towards, and the one it comes from.
TOWARDS = ("R", "A", "S")
FROM = ("L", "P", "I")
#: The planes, each named after the world axis it slices along: axial slices along S, etc.
PLANES = ("sagittal", "coronal", "axial")
#: Plane -> (the direction at the top of the screen, the direction on its left), radiologically.
RADIOLOGICAL: Mapping[str, tuple[str, str]] = {"axial": ("A", "R"), "coronal": ("S", "R"), "sagittal": ("S", "A")}


def _axis_of(letter: str) -> tuple[int, bool]:
    """The world axis an anatomical direction lies along, and whether the axis runs towards it."""
    for axis, (towards, back) in enumerate(zip(TOWARDS, FROM)):
        if letter in (towards, back):
            return axis, letter == towards
    raise ValueError(f"{letter!r} is not an anatomical direction; use one of {', '.join(TOWARDS + FROM)}.")


@dataclass(frozen=True)
class Edges:
    """The anatomical direction at each edge of the screen."""

    top: str
    bottom: str
    left: str
    right: str


@dataclass(frozen=True)
class PlaneView:
    """A plane as napari shows it: the world axis sliced, the axes down the rows and across the columns, their sense."""

    plane: str
    sliced: int      # the world axis the slider moves along
    rows: int        # the world axis shown top to bottom
    columns: int     # the world axis shown left to right
    up: bool         # world coordinates along ``rows`` grow towards the top of the screen
    left: bool       # world coordinates along ``columns`` grow towards the left of the screen

    def order(self, ndim: int = 3) -> tuple[int, ...]:
        """napari's ``dims.order`` (the last two shown) for a world of ``ndim`` axes whose last three are RAS.

        A 2D world (R, A) has only the axial plane: its order leaves the sliced axis out.
        """
        if ndim == 2 and self.sliced == 2:
            return (self.rows, self.columns)
        lead = ndim - 3
        if lead < 0:
            raise ValueError(f"A {self.plane} view needs three world axes; the viewer has {ndim}.")
        return (*range(lead), lead + self.sliced, lead + self.rows, lead + self.columns)

    @property
    def orientation2d(self) -> tuple[str, str]:
        """napari's ``camera.orientation2d``: which way the rows and the columns grow on screen."""
        return ("up" if self.up else "down", "left" if self.left else "right")

    @property
    def edges(self) -> Edges:
        """The anatomical letters at the screen's edges."""
        return edge_letters(self.rows, self.columns, self.up, self.left)


def plane_view(plane: str, convention: Mapping[str, tuple[str, str]] = RADIOLOGICAL) -> PlaneView:
    """How ``plane`` (axial, coronal or sagittal) is shown in ``convention`` (the top and left directions per plane)."""
    if plane not in convention:
        raise ValueError(f"There is no {plane!r} plane; choose one of {', '.join(convention)}.")
    top, left = convention[plane]
    rows, up = _axis_of(top)
    columns, grows_left = _axis_of(left)
    sliced = PLANES.index(plane)
    if len({sliced, rows, columns}) != 3:
        raise ValueError(f"A {plane} view cannot show {top} at the top and {left} on the left: "
                         f"name two directions that lie in the {plane} plane.")
    return PlaneView(plane, sliced, rows, columns, up, grows_left)


def edge_letters(rows: int, columns: int, up: bool, left: bool) -> Edges:
    """The letters at the screen's edges when world axis ``rows`` is shown down the screen and ``columns`` across it."""
    top, bottom = (TOWARDS[rows], FROM[rows]) if up else (FROM[rows], TOWARDS[rows])
    on_left, on_right = (TOWARDS[columns], FROM[columns]) if left else (FROM[columns], TOWARDS[columns])
    return Edges(top, bottom, on_left, on_right)


def on_screen(plane, axes: tuple[int, int], view: PlaneView):
    """A 2D slice whose two array axes run along world ``axes``, laid out as ``view`` shows it (row 0 at the top)."""
    if tuple(axes) == (view.columns, view.rows):
        plane = plane.T
    elif tuple(axes) != (view.rows, view.columns):
        raise ValueError(f"A slice along world axes {tuple(axes)} is not the {view.plane} plane.")
    if view.up:
        plane = plane[::-1]
    if view.left:
        plane = plane[:, ::-1]
    return plane


def plane_of(sliced: int) -> str:
    """The plane a view slicing along world axis ``sliced`` (of the RAS three) shows."""
    return PLANES[sliced]
