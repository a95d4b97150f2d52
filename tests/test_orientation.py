"""The viewing convention (core/orientation.py): which world axis each plane slices, which way its axes run, its letters."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segxai.core.orientation import (
    PLANES,
    RADIOLOGICAL,
    Edges,
    edge_letters,
    on_screen,
    plane_of,
    plane_view,
)


@pytest.mark.parametrize(
    ("plane", "sliced", "rows", "columns", "edges"),
    [
        ("axial", 2, 1, 0, Edges(top="A", bottom="P", left="R", right="L")),
        ("coronal", 1, 2, 0, Edges(top="S", bottom="I", left="R", right="L")),
        ("sagittal", 0, 2, 1, Edges(top="S", bottom="I", left="A", right="P")),
    ],
)
def test_radiological_planes(plane, sliced, rows, columns, edges):
    view = plane_view(plane)
    assert (view.sliced, view.rows, view.columns) == (sliced, rows, columns)
    assert view.order() == (sliced, rows, columns)
    assert view.orientation2d == ("up", "left")  # RAS+ coordinates grow towards A/S (top) and R (screen left)
    assert view.edges == edges
    assert plane_of(view.sliced) == plane


def test_order_keeps_leading_axes_and_a_2d_world_has_only_the_axial_plane():
    assert plane_view("coronal").order(4) == (0, 2, 3, 1)
    assert plane_view("axial").order(2) == (1, 0)
    with pytest.raises(ValueError, match="three world axes"):
        plane_view("sagittal").order(2)


def test_a_documented_preference_changes_the_sense_not_the_axes():
    neurological = {**RADIOLOGICAL, "axial": ("A", "L"), "coronal": ("S", "L")}
    view = plane_view("axial", neurological)
    assert (view.sliced, view.rows, view.columns) == (2, 1, 0)
    assert view.orientation2d == ("up", "right")
    assert view.edges == Edges(top="A", bottom="P", left="L", right="R")
    assert plane_view("axial", {"axial": ("P", "R")}).orientation2d == ("down", "left")


def test_bad_planes_and_directions_are_refused():
    with pytest.raises(ValueError, match="no 'oblique' plane"):
        plane_view("oblique")
    with pytest.raises(ValueError, match="lie in the axial plane"):
        plane_view("axial", {"axial": ("S", "R")})
    with pytest.raises(ValueError, match="not an anatomical direction"):
        plane_view("axial", {"axial": ("Q", "R")})


def test_edge_letters_follow_any_pair_of_displayed_axes():
    assert edge_letters(0, 1, up=False, left=False) == Edges(top="L", bottom="R", left="P", right="A")
    assert edge_letters(1, 2, up=True, left=True) == Edges(top="A", bottom="P", left="S", right="I")


def test_on_screen_puts_each_direction_at_its_edge():
    """A slice (x, y) of an axial plane: voxel x = 3 is patient's right of x = 0, y = 2 anterior of y = 0."""
    plane = np.zeros((4, 3), int)
    plane[3, 0] = 1  # far right, posterior
    plane[0, 2] = 2  # far left, anterior
    shown = on_screen(plane, (0, 1), plane_view("axial"))
    assert shown.shape == (3, 4)
    assert shown[-1, 0] == 1  # bottom (posterior) left (patient's right)
    assert shown[0, -1] == 2  # top (anterior) right (patient's left)
    assert on_screen(plane.T, (1, 0), plane_view("axial")).tolist() == shown.tolist()
    with pytest.raises(ValueError, match="not the sagittal plane"):
        on_screen(plane, (0, 1), plane_view("sagittal"))


def test_every_plane_has_a_convention():
    assert set(PLANES) == set(RADIOLOGICAL)
