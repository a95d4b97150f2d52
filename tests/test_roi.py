"""Local RoI importance: e_{b->a}, signed split and modality shares on hand-made maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segxai.core.attribution.base import Relevance
from napari_segxai.core.attribution.targets import Target
from napari_segxai.core.model.card import ClassInfo
from napari_segxai.core.roi import (BACKGROUND, BRAIN_OUTSIDE_TUMOUR, RoiImportance, brain_mask, case_regions,
                                    read_roi_csv, roi_importance)

CLASSES = (ClassInfo("background", 0, "#000000"), ClassInfo("core", 1, "#ff0000"), ClassInfo("edema", 2, "#00ff00"))


def relevance_of(maps: np.ndarray, channels: tuple[str, ...] | None = None, classes: tuple[str, ...] | None = None,
                 method: str = "hand") -> Relevance:
    """A Relevance wrapping hand-made maps (K_t, C, *spatial), explaining the whole grid of each class."""
    maps = np.asarray(maps, dtype=np.float32)
    k, c = maps.shape[:2]
    masks = np.ones((k, *maps.shape[2:]), dtype=bool)
    return Relevance(
        relevance=maps, class_indices=tuple(range(1, k + 1)),
        class_names=classes or tuple(f"class {i}" for i in range(1, k + 1)),
        channel_names=channels or tuple(f"m{i}" for i in range(c)), method=method, parameters={}, signed=True,
        target=Target("region", tuple(range(1, k + 1)), masks), seconds=0.0,
    )


def test_known_answer_3d_with_signed_split_and_modality_share():
    maps = np.zeros((1, 2, 4, 4, 4), dtype=np.float32)
    maps[0, 0, 0, 0, 0] = 3.0      # in region a, positive, modality m0
    maps[0, 1, 0, 0, 1] = -1.0     # in region a, negative, modality m1
    maps[0, 0, 3, 3, 3] = 4.0      # in region b, positive, modality m0
    maps[0, 1, 2, 2, 2] = -2.0     # in no region, negative, modality m1
    a = np.zeros((4, 4, 4), dtype=bool)
    a[0, 0] = True
    b = np.zeros((4, 4, 4), dtype=bool)
    b[3, 3, 3] = True
    result = roi_importance(relevance_of(maps), {"a": a, "b": b})
    assert result.region_names == ("a", "b")
    np.testing.assert_allclose(result.total, [10.0])
    np.testing.assert_allclose(result.importance, [[0.4, 0.4]])
    np.testing.assert_allclose(result.positive, [[0.3, 0.4]])
    np.testing.assert_allclose(result.negative, [[0.1, 0.0]])
    np.testing.assert_allclose(result.modality_share, [[0.7, 0.3]])
    np.testing.assert_allclose(result.modality_positive, [[0.7, 0.0]])
    np.testing.assert_allclose(result.modality_negative, [[0.0, 0.3]])
    np.testing.assert_array_equal(result.region_voxels, [4, 1])
    assert result.region("class 1", "a") == pytest.approx(0.4)
    assert result.method == "hand" and "user region" in result.target


def test_overlapping_regions_each_get_their_own_share():
    maps = np.ones((1, 1, 10), dtype=np.float32)
    first = np.zeros(10, dtype=bool)
    first[:6] = True
    second = np.zeros(10, dtype=bool)
    second[4:] = True
    inner = np.zeros(10, dtype=bool)
    inner[5] = True
    result = roi_importance(relevance_of(maps), {"first": first, "second": second, "inner": inner})
    np.testing.assert_allclose(result.importance, [[0.6, 0.6, 0.1]])


def test_empty_region_and_all_zero_relevance_give_zeros_without_warnings():
    maps = np.zeros((2, 3, 5, 5), dtype=np.float32)
    maps[1, 2, 1, 1] = -5.0
    region = np.zeros((5, 5), dtype=bool)
    region[1, 1] = True
    empty = np.zeros((5, 5), dtype=bool)
    with np.errstate(all="raise"):
        result = roi_importance(relevance_of(maps), {"spot": region, "nothing": empty})
    np.testing.assert_array_equal(result.total, [0.0, 5.0])
    np.testing.assert_array_equal(result.importance, [[0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(result.negative, [[0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(result.modality_share, [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(result.region_voxels, [1, 0])
    assert np.isfinite(result.importance).all() and np.isfinite(result.modality_share).all()


def test_case_regions_partition_the_grid_and_shares_add_to_one():
    rng = np.random.default_rng(0)
    labels = np.zeros((8, 8), dtype=np.int16)
    labels[2:4, 2:4] = 1
    labels[4:6, 2:6] = 2
    channels = np.zeros((3, 8, 8), dtype=np.float32)
    channels[:, 1:7, 1:7] = 1.0
    regions = case_regions(labels, CLASSES, channels=channels)
    assert tuple(regions) == ("core", "edema", BRAIN_OUTSIDE_TUMOUR, BACKGROUND)
    assert [int(m.sum()) for m in regions.values()] == [4, 8, 36 - 12, 64 - 36]
    assert (np.sum([m.astype(int) for m in regions.values()], axis=0) == 1).all()
    result = roi_importance(relevance_of(rng.standard_normal((2, 3, 8, 8))), regions)
    np.testing.assert_allclose(result.importance.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(result.modality_share.sum(axis=1), [1.0, 1.0])
    np.testing.assert_allclose(result.positive + result.negative, result.importance)


def test_case_regions_brain_sources_empty_classes_and_atlas():
    labels = np.zeros((4, 4, 4), dtype=np.int16)
    labels[0, 0, 0] = 1
    whole = case_regions(labels, CLASSES)
    assert int(whole["edema"].sum()) == 0 and int(whole[BACKGROUND].sum()) == 0
    assert int(whole[BRAIN_OUTSIDE_TUMOUR].sum()) == 63
    brain = np.zeros((4, 4, 4), dtype=bool)
    brain[:2] = True
    given = case_regions(labels, CLASSES, brain=brain)
    assert int(given[BRAIN_OUTSIDE_TUMOUR].sum()) == 31 and int(given[BACKGROUND].sum()) == 32
    atlas = np.zeros((4, 4, 4), dtype=np.int32)
    atlas[0] = 3
    atlas[3] = 7
    named = case_regions(labels, CLASSES, atlas=atlas, atlas_names={3: "frontal", 9: "occipital"})
    assert list(named)[-3:] == ["atlas:frontal", "atlas:7", "atlas:occipital"]
    assert int(named["atlas:frontal"].sum()) == 16 and int(named["atlas:occipital"].sum()) == 0
    result = roi_importance(relevance_of(np.ones((1, 1, 4, 4, 4))), named)
    assert result.region("class 1", "atlas:frontal") == pytest.approx(0.25)
    assert result.region("class 1", "core") == pytest.approx(1 / 64)


def test_brain_mask_is_any_channel_non_zero():
    channels = np.zeros((2, 3, 3), dtype=np.float32)
    channels[0, 0, 0] = 1.0
    channels[1, 2, 2] = -0.5
    assert brain_mask(channels).sum() == 2 and brain_mask(channels)[2, 2]


def test_any_channel_count_and_a_single_shared_channel():
    rng = np.random.default_rng(1)
    for n_channels in (1, 2, 7):
        maps = rng.standard_normal((3, n_channels, 6, 5, 4))
        region = np.zeros((6, 5, 4), dtype=bool)
        region[:3] = True
        result = roi_importance(relevance_of(maps), {"half": region})
        assert result.modality_share.shape == (3, n_channels)
        expected = np.abs(maps[:, :, :3]).sum(axis=(1, 2, 3, 4)) / np.abs(maps).sum(axis=(1, 2, 3, 4))
        np.testing.assert_allclose(result.importance[:, 0], expected, rtol=1e-5)
        per_channel = np.abs(maps).sum(axis=(2, 3, 4)) / np.abs(maps).sum(axis=(1, 2, 3, 4))[:, None]
        np.testing.assert_allclose(result.modality_share, per_channel, rtol=1e-5)


def test_csv_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels[1:3, 1:3, 1:3] = 2
    regions = case_regions(labels, CLASSES, brain=np.ones((6, 6, 6), dtype=bool))
    maps = rng.standard_normal((2, 2, 6, 6, 6))
    result = roi_importance(relevance_of(maps, channels=("t1", "flair"), classes=("core", "edema")), regions)
    path = result.to_csv(tmp_path / "out" / "roi.csv")
    assert path.read_text().splitlines()[0] == "class,kind,name,importance,positive,negative,voxels,total,method,target"
    assert len(result.rows()) == 2 * (len(regions) + 2)
    back = read_roi_csv(path)
    assert isinstance(back, RoiImportance)
    assert (back.class_names, back.region_names, back.modality_names) == (("core", "edema"), tuple(regions), ("t1", "flair"))
    for name in ("importance", "positive", "negative", "modality_share", "total", "region_voxels",
                 "modality_positive", "modality_negative"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name), err_msg=name)
    assert (back.method, back.target) == (result.method, result.target)
    assert not list(path.parent.glob(".*")), "temporary files were left behind"


def test_inputs_are_not_modified():
    maps = np.random.default_rng(3).standard_normal((1, 2, 4, 4)).astype(np.float32)
    relevance = relevance_of(maps)
    before = relevance.relevance.copy()
    region = np.eye(4, dtype=bool)
    roi_importance(relevance, {"diagonal": region})
    np.testing.assert_array_equal(relevance.relevance, before)
    assert region.sum() == 4


@pytest.mark.parametrize("call, message", [
    (lambda: roi_importance(relevance_of(np.ones((1, 1, 4, 4))), {"r": np.ones((3, 4), dtype=bool)}), "spatial shape"),
    (lambda: roi_importance(relevance_of(np.ones((1, 1, 4, 4))), {"r": np.ones((4, 4), dtype=np.uint8)}), "boolean"),
    (lambda: roi_importance(relevance_of(np.full((1, 1, 2, 2), np.nan)), {}), "NaN"),
    (lambda: case_regions(np.full((3, 3), 5, dtype=np.int16), CLASSES), "value 5"),
    (lambda: case_regions(np.zeros((3, 3)), CLASSES), "integer"),
    (lambda: case_regions(np.zeros((3, 3), dtype=np.int16), CLASSES, brain=np.ones((2, 2), dtype=bool)), "brain mask"),
])
def test_user_mistakes_raise_one_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_reading_a_csv_that_is_not_a_table_fails_clearly(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an RoI importance table"):
        read_roi_csv(path)


def test_progress_is_reported_per_class_and_cancel_stops():
    from napari_segxai.core.progress import Cancelled

    maps = np.ones((3, 1, 4, 4), dtype=np.float32)
    seen = []
    roi_importance(relevance_of(maps), {}, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    with pytest.raises(Cancelled):
        roi_importance(relevance_of(maps), {}, should_cancel=lambda: True)
