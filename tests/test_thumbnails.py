"""Thumbnails (grey slice + class outlines, radiological orientation) and contact sheets, on hand-made volumes."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest

from napari_segxai.core.case import Case
from napari_segxai.core.model.card import ClassInfo
from napari_segxai.core.thumbnails import (
    Tile,
    case_tile,
    contact_sheet,
    format_score,
    label_colors,
    outline,
    thumbnail,
    window,
)

SHAPE = (16, 16, 16)
GREEN, YELLOW = (60, 180, 75), (255, 225, 25)
COLORS = {2: "#3cb44b", 4: "#ffe119"}
# A box of label 2 at x 4..7, y 2..5, z 5..9 (RAS voxel axes), with a label-4 voxel column inside.
BOX = (slice(4, 8), slice(2, 6), slice(5, 10))


def _volume_and_labels():
    rng = np.random.default_rng(0)
    volume = (100 + rng.normal(0, 5, SHAPE)).astype(np.float32)
    labels = np.zeros(SHAPE, np.int16)
    labels[BOX] = 2
    return volume, labels


def _rect_edge(top, left, bottom, right, shape):
    """Expected boundary of a filled rectangle of pixels [top..bottom] x [left..right]."""
    edge = np.zeros(shape, bool)
    edge[top:bottom + 1, [left, right]] = True
    edge[[top, bottom], left:right + 1] = True
    return edge


def _coloured(image, color):
    return np.all(image == np.array(color, np.uint8), axis=-1)


def test_axial_outline_sits_where_the_box_is_in_radiological_orientation():
    volume, labels = _volume_and_labels()
    image = thumbnail(volume, labels, centroid=(6, 4, 7), size=64, colors=COLORS)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # 4 pixels per voxel; column = patient's right on the left: x -> 15 - x; row: anterior up: y -> 15 - y.
    # x 4..7 -> columns 32..47, y 2..5 -> rows 40..55.
    expected = _rect_edge(40, 32, 55, 47, (64, 64))
    np.testing.assert_array_equal(_coloured(image, GREEN), expected)
    inside = image[42:54, 34:46]
    assert np.all(inside[..., 0] == inside[..., 1]) and np.all(inside[..., 1] == inside[..., 2])  # grey


def test_slice_goes_through_the_centroid_and_outside_slices_have_no_outline():
    volume, labels = _volume_and_labels()
    outside = thumbnail(volume, labels, centroid=(6, 4, 12), size=32, colors=COLORS)
    assert not _coloured(outside, GREEN).any()
    coronal = thumbnail(volume, labels, centroid=(6, 4, 7), axis=1, size=32, colors=COLORS)
    # coronal: rows superior-up (z -> 15 - z), columns right-on-left (x -> 15 - x); 2 pixels per voxel.
    np.testing.assert_array_equal(_coloured(coronal, GREEN), _rect_edge(12, 16, 21, 23, (32, 32)))
    sagittal = thumbnail(volume, labels, centroid=(6, 4, 7), axis=0, size=32, colors=COLORS)
    # sagittal: rows superior-up, columns anterior-on-the-left (y -> 15 - y).
    np.testing.assert_array_equal(_coloured(sagittal, GREEN), _rect_edge(12, 20, 21, 27, (32, 32)))


def test_each_class_gets_its_own_colour_from_a_mapping_or_card_classes():
    volume, labels = _volume_and_labels()
    labels[5:7, 3:5, 5:10] = 4
    classes = (ClassInfo("background", 0, "#000000"), ClassInfo("edema", 2, "#3cb44b"),
               ClassInfo("enhancing", 4, "#ffe119"))
    by_mapping = thumbnail(volume, labels, (6, 4, 7), size=64, colors=COLORS)
    by_card = thumbnail(volume, labels, (6, 4, 7), size=64, colors=classes)
    np.testing.assert_array_equal(by_mapping, by_card)
    # label 4 at x 5..6, y 3..4 -> columns 36..43, rows 44..51
    np.testing.assert_array_equal(_coloured(by_card, YELLOW), _rect_edge(44, 36, 51, 43, (64, 64)))
    # no colours given: distinct fallback colours, none of them grey
    plain = thumbnail(volume, labels, (6, 4, 7), size=64)
    palette = label_colors(None, [2, 4])
    assert not np.array_equal(palette[2], palette[4])
    assert _coloured(plain, palette[2]).any() and _coloured(plain, palette[4]).any()


def test_the_highlighted_class_is_drawn_thicker():
    volume, labels = _volume_and_labels()
    plain = thumbnail(volume, labels, (6, 4, 7), size=64, colors=COLORS)
    marked = thumbnail(volume, labels, (6, 4, 7), size=64, colors=COLORS, highlight=2)
    two_pixels = _rect_edge(40, 32, 55, 47, (64, 64)) | _rect_edge(41, 33, 54, 46, (64, 64))
    np.testing.assert_array_equal(_coloured(marked, GREEN), two_pixels)
    np.testing.assert_array_equal(marked[~two_pixels], plain[~two_pixels])


def test_stored_orientation_is_undone_with_the_affine():
    volume, labels = _volume_and_labels()
    ras = Case(volume[None], ("t1",), np.eye(4), labels, None, (), "ras")
    # The same anatomy stored LPS (x and y reversed), with the affine saying so.
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:2, 3] = 15.0
    lps = Case(volume[None, ::-1, ::-1].copy(), ("t1",), lps_affine, labels[::-1, ::-1].copy(), None, (), "lps")
    from_ras = thumbnail(ras, None, (6, 4, 7), size=32, colors=COLORS)
    from_lps = thumbnail(lps, None, (15 - 6, 15 - 4, 7), size=32, colors=COLORS)
    np.testing.assert_array_equal(from_ras, from_lps)


def test_voxel_spacing_sets_the_aspect_and_the_picture_is_padded_square():
    volume, labels = _volume_and_labels()
    affine = np.diag([1.0, 2.0, 1.0, 1.0])  # y voxels twice as long: the picture is twice as tall as wide
    image = thumbnail(volume, labels, (6, 4, 7), size=64, affine=affine, colors=COLORS)
    assert image.shape == (64, 64, 3)
    filled = np.argwhere(image.any(axis=-1))
    assert filled[:, 1].min() == 16 and filled[:, 1].max() == 47  # 32 wide, centred
    assert filled[:, 0].min() == 0 and filled[:, 0].max() == 63


def test_flair_is_the_default_channel_and_others_can_be_chosen():
    volume, labels = _volume_and_labels()
    channels = np.stack([volume, 3 * volume[::-1]])  # different contents
    case = Case(channels, ("t1", "flair"), np.eye(4), labels, None, (), "two")
    default = thumbnail(case, None, (6, 4, 7), size=32)
    np.testing.assert_array_equal(default, thumbnail(channels[1], labels, (6, 4, 7), size=32))
    np.testing.assert_array_equal(thumbnail(case, None, (6, 4, 7), size=32, channel="t1"),
                                  thumbnail(channels, labels, (6, 4, 7), size=32, channel=0))
    # channels without names: the first
    np.testing.assert_array_equal(thumbnail(channels, labels, (6, 4, 7), size=32),
                                  thumbnail(channels[0], labels, (6, 4, 7), size=32))
    with pytest.raises(ValueError, match="no 't2' channel"):
        thumbnail(case, None, (6, 4, 7), channel="t2")


def test_robust_window_and_zero_background():
    volume, labels = _volume_and_labels()
    volume[0, 0, 7] = 1e6  # one outlier does not wash the picture out
    low, high = window(volume)
    assert 80 < low < 100 < high < 120
    volume[:, 12:, :] = 0.0  # outside the brain (y >= 12 -> rows 0..3 at 4 px per voxel)
    image = thumbnail(volume, labels, (6, 4, 7), size=64, colors=COLORS)
    assert np.all(image[:16] == 0) and image[20:, :].mean() > 40


def test_two_dimensional_images_are_shown_whole():
    volume, labels = _volume_and_labels()
    image = thumbnail(volume[..., 7], labels[..., 7], (6, 4), size=64, colors=COLORS)
    from_3d = thumbnail(volume, labels, (6, 4, 7), size=64, colors=COLORS)
    # the window comes from the whole image given (one slice here), so compare the outline, not the grey
    np.testing.assert_array_equal(_coloured(image, GREEN), _coloured(from_3d, GREEN))
    assert _coloured(image, GREEN).sum() == 60
    with pytest.raises(ValueError, match="coordinates"):
        thumbnail(volume, labels, (6, 4), size=64)
    with pytest.raises(ValueError, match="labels' shape"):
        thumbnail(volume, labels[:8], (6, 4, 7))


def test_outline_width():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    assert outline(mask).sum() == 20 and outline(mask, 2).sum() == 32
    assert not (outline(mask, 2) & ~mask).any()


def test_contact_sheet_writes_a_png_with_rows_of_tiles(tmp_path):
    volume, labels = _volume_and_labels()
    case = Case(volume[None], ("flair",), np.eye(4), labels, None, (), "synth-00000007")
    evidence = SimpleNamespace(training_case="synth-00000007", seed=7, train_class="edema", score=-0.0123,
                               centroid=(6, 4, 7), bbox=((4, 8), (2, 6), (5, 10)))
    classes = (ClassInfo("background", 0, "#000000"), ClassInfo("edema", 2, "#3cb44b"))
    tile = case_tile(evidence, case, colors=classes, size=64)
    assert tile.case_id == "synth-00000007" and tile.class_name == "edema" and tile.score == -0.0123
    assert tile.caption == "synth-00000007\nedema  -0.0123" and format_score(2.5e-7) == "+2.5e-07"
    np.testing.assert_array_equal(tile.image, thumbnail(volume, labels, (6, 4, 7), size=64, colors=COLORS,
                                                        highlight=2))  # its class's outline thicker
    path = contact_sheet({"Proponents": [tile, tile, tile], "Opponents": [tile]}, tmp_path / "sheet.png",
                         "Training evidence")
    picture = matplotlib.image.imread(path)
    assert picture.shape[1] > picture.shape[0] > 2 * 64 and picture.shape[2] in (3, 4)
    green = np.all(np.abs(picture[..., :3] - np.array(GREEN) / 255) < 0.02, axis=-1)
    assert green.sum() >= 4 * 40  # four tiles' outlines are in the picture
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # atomic: no temporary left
    empty = contact_sheet({"Proponents": [tile], "Opponents": []}, tmp_path / "one.png")
    assert empty.is_file()
    with pytest.raises(ValueError, match="png"):
        contact_sheet({"Proponents": [tile]}, tmp_path / "sheet.jpg")
    with pytest.raises(ValueError, match="uint8"):
        contact_sheet({"Proponents": [Tile(np.zeros((4, 4)), "x", "edema", 0.0)]}, tmp_path / "bad.png")


def test_relevance_overlay_is_red_where_positive_blue_where_negative_and_follows_the_orientation():
    volume, labels = _volume_and_labels()
    relevance = np.zeros(SHAPE, np.float32)
    relevance[BOX] = 2.0                      # positive over the box: x 4..7, y 2..5 -> rows 40..55, columns 32..47
    relevance[10:14, 10:14, 5:10] = -2.0      # negative: x 10..13 -> columns 8..23, y 10..13 -> rows 8..23
    image = thumbnail(volume, None, (6, 4, 7), size=64, overlay=relevance).astype(int)
    red, blue, grey = image[47, 40], image[15, 15], image[30, 60]
    assert red[0] > 200 and red[2] < 60
    assert blue[2] > 200 and blue[0] < 60
    assert grey[0] == grey[1] == grey[2]
    half = thumbnail(volume, None, (6, 4, 7), size=64, overlay=relevance, overlay_limit=4.0).astype(int)
    assert 100 < half[47, 40, 0] < red[0]     # half the limit: half as opaque
    # stored LPS with the affine saying so: the same picture
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:2, 3] = 15.0
    lps = thumbnail(volume[::-1, ::-1].copy(), None, (15 - 6, 15 - 4, 7), size=64,
                    overlay=relevance[::-1, ::-1].copy(), affine=lps_affine).astype(int)
    ras = thumbnail(volume, None, (6, 4, 7), size=64, overlay=relevance, affine=np.eye(4)).astype(int)
    np.testing.assert_array_equal(lps, ras)
    with pytest.raises(ValueError, match="overlay's shape"):
        thumbnail(volume, None, (6, 4, 7), overlay=relevance[:8])
