"""The viewer opens a case axial in the radiological convention, with R/L, A/P, S/I on the canvas edges, as the report does."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_segxai._orientation import EDGE_POSITIONS, ViewOrientation, overlay_name
from napari_segxai._qt.orientation_widget import PlaneChoice

from _viewer import open_case

SHAPE = (16, 16, 12)
SPACING = (2.0, 2.0, 2.5)
MARKER_OFFSET_MM = np.array([8.0, 8.0, 7.0])  # the marker lies right, anterior and superior of the centre
AFFINES = {  # voxel axis i runs along world axis i, towards R/A/S (+) or L/P/I (-)
    "RAS": (1, 1, 1),
    "LPS": (-1, -1, 1),
    "LAS": (-1, 1, 1),
}
# Right-anterior-superior shows (at the top, on the left) in every plane: A or S up, R or A on the left.
TOP_LEFT = (True, True)


def letters(viewer) -> dict[str, str]:
    """The letter shown at each canvas edge ('' when hidden)."""
    shown = {}
    for edge in EDGE_POSITIONS:
        overlay = viewer.canvas.overlays[overlay_name(edge)]
        shown[edge] = overlay.text if overlay.visible else ""
    return shown


def write_marker_case(folder: Path, signs, axes=(0, 1, 2)) -> tuple[Path, np.ndarray, np.ndarray]:
    """A one-volume NIfTI case with a bright ball on the patient's right-anterior-superior; its path, world centre, voxel.

    Voxel axis i runs along world axis ``axes[i]``, towards R/A/S when ``signs[i]`` is 1, else away.
    """
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([0.0, 0.0, 0.0, 1.0])
    for i, (axis, sign) in enumerate(zip(axes, signs)):
        affine[axis, i] = sign * SPACING[i]
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(SHAPE) - 1) / 2)  # the grid centred on 0 mm
    voxels = np.indices(SHAPE).reshape(3, -1)
    world = (affine @ np.r_[voxels, np.ones((1, voxels.shape[1]))])[:3].T.reshape(*SHAPE, 3)
    ball = np.linalg.norm(world - MARKER_OFFSET_MM, axis=-1) < 4.0
    volume = np.where(ball, 100.0, 10.0).astype(np.float32)
    path = folder / "marker_flair.nii.gz"
    nib.save(nib.Nifti1Image(volume, affine), path)
    voxel = np.argwhere(ball).mean(axis=0)
    return path, (affine @ np.r_[voxel, 1.0])[:3], np.round(voxel).astype(int)


def only_images(viewer) -> None:
    """Hide the labels layers (their class colours include the letters' yellow)."""
    for layer in viewer.layers:
        layer.visible = layer.visible and type(layer).__name__ == "Image"


def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        QApplication.processEvents()


def marker_quadrant(picture: np.ndarray) -> tuple[bool, bool]:
    """Whether the white marker's centre is in the (top, left) half of an RGB picture."""
    rgb = picture[..., :3].astype(int)
    white = np.all(rgb > 200, axis=-1) & (np.ptp(rgb, axis=-1) < 30)  # the yellow letters are left out
    rows, columns = np.nonzero(white)
    assert len(rows) > 0, "the marker is not on screen"
    return rows.mean() < picture.shape[0] / 2, columns.mean() < picture.shape[1] / 2


def test_a_case_opens_axial_radiological_with_its_letters(make_napari_viewer, tiny_case):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)  # the reader path: napari's File > Open
    assert tuple(viewer.dims.order) == (2, 1, 0)  # slices along S, rows along A, columns along R
    assert tuple(str(v) for v in viewer.scene.camera.orientation2d) == ("up", "left")
    assert letters(viewer) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert viewer.canvas.overlays[overlay_name("left")].position == "middle_left"


def test_the_plane_buttons_and_napari_transpose_move_the_letters(make_napari_viewer, tiny_case, qtbot):
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    choice = PlaneChoice(viewer)
    qtbot.addWidget(choice)
    assert choice.buttons["axial"].isChecked()
    choice.buttons["coronal"].click()
    assert tuple(viewer.dims.order) == (1, 2, 0)
    assert letters(viewer) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert choice.buttons["coronal"].isChecked() and not choice.buttons["axial"].isChecked()
    choice.buttons["sagittal"].click()
    assert letters(viewer) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    viewer.dims.order = (2, 1, 0)  # napari's own axis order (the dims sliders' drag and drop)
    assert letters(viewer) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert choice.buttons["axial"].isChecked()
    viewer.dims.transpose()  # napari's transpose button: rows and columns swap, the letters follow
    assert letters(viewer) == {"top": "R", "bottom": "L", "left": "A", "right": "P"}
    viewer.scene.camera.orientation2d = ("down", "left")
    assert letters(viewer)["top"] == "L"
    viewer.dims.ndisplay = 3  # no fixed screen edges in 3D: no letters, no plane
    assert letters(viewer) == dict.fromkeys(EDGE_POSITIONS, "")
    assert not any(button.isChecked() for button in choice.buttons.values())


def test_layers_that_are_not_a_case_get_no_letters(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 5, 6)))
    orientation = ViewOrientation.of(viewer)
    assert orientation is ViewOrientation.of(viewer)
    assert letters(viewer) == dict.fromkeys(EDGE_POSITIONS, "")
    assert orientation.shown_plane() is None
    assert tuple(viewer.dims.order) == (0, 1, 2)  # napari's view of other data is left alone


@pytest.mark.parametrize("storage", sorted(AFFINES))
def test_the_patients_right_is_on_the_screens_left_in_viewer_and_report_whatever_the_storage(
        make_napari_viewer, tmp_path, storage):
    """A marker right-anterior-superior of the centre: top left in every plane of the viewer and of the report."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.report.figures import AXES
    from napari_segxai.core.thumbnails import thumbnail

    path, world, voxel = write_marker_case(tmp_path / storage, AFFINES[storage])
    viewer = make_napari_viewer(show=True)
    open_case(viewer, path)
    viewer.dims.set_point(range(3), world)
    orientation = ViewOrientation.of(viewer)
    case = load_case(path)
    for axis, plane in AXES:  # the report's slices: (RAS axis, plane name)
        orientation.show_plane(plane)
        viewer.dims.set_point(range(3), world)
        settle()
        on_screen = marker_quadrant(viewer.screenshot(canvas_only=True, flash=False))
        assert on_screen == TOP_LEFT, f"{storage} {plane} viewer"
        in_report = marker_quadrant(thumbnail(case, None, voxel, axis=axis, size=64))
        assert in_report == on_screen, f"{storage} {plane}: the report and the viewer disagree"


def test_a_screenshot_of_the_viewer_shows_the_letters(make_napari_viewer, tiny_case, tmp_path):
    """The letters are drawn on the canvas (the picture docs/viewer.md describes)."""
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    only_images(viewer)
    settle()
    picture = viewer.screenshot(str(tmp_path / "viewer.png"), canvas_only=True, flash=False)[..., :3].astype(int)
    yellow = (picture[..., 0] > 200) & (picture[..., 1] > 170) & (picture[..., 2] < 140)
    height, width = yellow.shape
    band = slice(height // 3, 2 * height // 3), slice(width // 3, 2 * width // 3)
    assert yellow[band[0], : width // 8].any() and yellow[band[0], -width // 8:].any()  # R and L at the middle edges
    assert yellow[: height // 8, band[1]].any() and yellow[-height // 8:, band[1]].any()  # A and P at the top/bottom


def test_a_caption_at_the_top_centre_tiles_beside_the_letter_not_across_it(make_napari_viewer, tiny_case):
    """The demo's caption and Explain's colour legend sit at the top centre, where the A is: napari stacks them."""
    viewer = make_napari_viewer(show=True)
    open_case(viewer, tiny_case)
    only_images(viewer)
    caption = viewer.canvas.overlays.text
    caption.text, caption.position, caption.color, caption.visible = "a caption\nof two lines", "top_center", "white", True
    settle()
    picture = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    middle = picture[: picture.shape[0] // 3, picture.shape[1] // 3: 2 * picture.shape[1] // 3]
    yellow_rows = np.nonzero(((middle[..., 0] > 200) & (middle[..., 1] > 170) & (middle[..., 2] < 140)).any(axis=1))[0]
    white_rows = np.nonzero((middle > 200).all(axis=-1).any(axis=1))[0]
    assert len(yellow_rows) and len(white_rows)
    assert yellow_rows.max() < white_rows.min() or white_rows.max() < yellow_rows.min()


def test_a_case_stored_along_other_axes_opens_in_the_plane_napari_can_draw(make_napari_viewer, tmp_path, monkeypatch):
    """Voxel axes (R, S, A), as a coronal acquisition: napari draws only its sagittal slices; axial is refused."""
    from napari_segxai._qt import orientation_widget
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.thumbnails import thumbnail

    errors = []
    monkeypatch.setattr(orientation_widget, "show_error", errors.append)
    path, world, voxel = write_marker_case(tmp_path / "coronal", (1, -1, 1), axes=(0, 2, 1))
    viewer = make_napari_viewer(show=True)
    open_case(viewer, path)
    assert letters(viewer) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    viewer.dims.set_point(range(3), world)
    settle()
    assert marker_quadrant(viewer.screenshot(canvas_only=True, flash=False)) == TOP_LEFT
    assert marker_quadrant(thumbnail(load_case(path), None, voxel, axis=0, size=64)) == TOP_LEFT
    choice = PlaneChoice(viewer)
    choice.buttons["axial"].click()
    assert "cannot draw this case's axial slices" in errors[-1] and "(sagittal)" in errors[-1]
    assert choice.buttons["sagittal"].isChecked() and not choice.buttons["axial"].isChecked()
    assert letters(viewer)["left"] == "A"
