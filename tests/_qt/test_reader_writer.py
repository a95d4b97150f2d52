"""The napari reader, writers and layer conversions (napari layers, no viewer)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_segxai._layers import case_from_layers, layer_world_affine
from napari_segxai._reader import napari_get_reader
from napari_segxai._writer import write_image, write_labels

MODALITIES = ("t1", "t1ce", "t2", "flair")
SHAPE = (16, 16, 12)


def _layers(path):
    reader = napari_get_reader(str(path))
    assert callable(reader)
    return [
        (Image if kind == "image" else Labels)(data, **kwargs)
        for data, kwargs, kind in reader(str(path))
    ]


def test_reader_opens_a_case_folder_on_its_affine(tiny_case, lps_affine):
    LPS_AFFINE = lps_affine
    layers = _layers(tiny_case)
    images = [layer for layer in layers if isinstance(layer, Image)]
    labels = [layer for layer in layers if isinstance(layer, Labels)]
    assert [layer.name for layer in images] == list(MODALITIES)
    assert [layer.visible for layer in images] == [True, False, False, False]
    assert len(labels) == 1 and labels[0].name == "Tiny_case_001 reference"
    for layer in layers:
        assert layer.data.shape == SHAPE
        np.testing.assert_allclose(layer_world_affine(layer), LPS_AFFINE)
        assert layer.metadata["segxai_case"] == "Tiny_case_001"
        assert any(p.endswith("_seg.nii.gz") for p in layer.metadata["source_paths"])
    # A known voxel lands at the same world (mm) position in every layer.
    voxel = np.array([10, 6, 5])
    expected = (LPS_AFFINE @ np.r_[voxel, 1])[:3]
    for layer in layers:
        np.testing.assert_allclose(layer.data_to_world(voxel), expected)
    # Reference classes keep their names and distinct colours; the background is transparent.
    label = labels[0]
    assert dict(zip(label.features["index"], label.features["class"])) == {
        0: "background", 1: "necrosis", 2: "edema", 4: "enhancing",
    }
    assert label.colormap.map(0)[3] == 0
    colours = {tuple(np.round(label.colormap.map(v), 3)) for v in (1, 2, 4)}
    assert len(colours) == 3
    lo, hi = images[3].contrast_limits
    assert lo < hi


def test_reader_opens_a_single_file(tiny_case, lps_affine):
    LPS_AFFINE = lps_affine
    layers = _layers(tiny_case / "Tiny_case_001_t1ce.nii.gz")
    assert [layer.name for layer in layers] == ["t1ce"]
    np.testing.assert_allclose(layer_world_affine(layers[0]), LPS_AFFINE)


def test_reader_returns_none_for_what_it_cannot_read(tmp_path, tiny_case):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti file at all")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    for path in (junk, text, empty, tmp_path / "missing.nii", [str(junk), str(text)]):
        assert napari_get_reader(path if isinstance(path, list) else str(path)) is None


def test_writer_round_trip_and_refusal(tiny_case, tmp_path, lps_affine, monkeypatch):
    LPS_AFFINE = lps_affine
    layers = _layers(tiny_case)
    label = next(layer for layer in layers if isinstance(layer, Labels))
    data, meta, _ = label.as_layer_data_tuple()
    written = write_labels(str(tmp_path / "out" / "labels"), data, meta)
    assert written == [str(tmp_path / "out" / "labels.nii.gz")]
    img = nib.load(written[0])
    np.testing.assert_allclose(img.affine, LPS_AFFINE)
    np.testing.assert_array_equal(np.asarray(img.dataobj), label.data)

    source = tiny_case / "Tiny_case_001_seg.nii.gz"
    before = source.read_bytes()
    said = []
    monkeypatch.setattr("napari_segxai._writer.show_error", said.append)
    # napari swallows a writer's ValueError, so the writer says why and returns no written path
    assert write_labels(str(source), np.zeros(SHAPE, np.int16), meta) == []
    assert len(said) == 1 and said[0].startswith("Refusing to overwrite")
    assert source.read_bytes() == before


def test_image_writer_keeps_scale_and_translate(tmp_path, lps_affine):
    LPS_AFFINE = lps_affine
    volume = np.random.default_rng(1).random((6, 5, 4)).astype(np.float32)
    layer = Image(volume, scale=(1.5, 2.0, 3.0), translate=(10.0, -4.0, 7.0), affine=LPS_AFFINE)
    data, meta, _ = layer.as_layer_data_tuple()
    path = write_image(str(tmp_path / "image.nii"), data, meta)[0]
    img = nib.load(path)
    for voxel in ([0, 0, 0], [5, 4, 3], [2, 1, 3]):
        np.testing.assert_allclose((img.affine @ np.r_[voxel, 1])[:3], layer.data_to_world(voxel))
    np.testing.assert_allclose(np.asarray(img.dataobj), volume)


def test_napari_saves_and_opens_through_the_plugin(npe2pm, tiny_case, tmp_path, lps_affine):
    import napari
    from napari.plugins.io import read_data_with_plugins
    from npe2 import PluginManifest

    npe2pm.register(PluginManifest.from_distribution("napari-segxai"))
    layer_data = read_data_with_plugins([str(tiny_case)], plugin="napari-segxai")[0]
    assert [kwargs["name"] for _, kwargs, _ in layer_data] == [*MODALITIES, "Tiny_case_001 reference"]
    label = Labels(layer_data[-1][0], **layer_data[-1][1])
    paths = napari.save_layers(str(tmp_path / "saved.nii.gz"), [label], plugin="napari-segxai")
    assert [str(p) for p in paths] == [str(tmp_path / "saved.nii.gz")]
    np.testing.assert_allclose(nib.load(paths[0]).affine, lps_affine)


def test_case_from_layers_rebuilds_the_case(tiny_case, lps_affine):
    LPS_AFFINE = lps_affine
    images = [layer for layer in _layers(tiny_case) if isinstance(layer, Image)]
    case = case_from_layers(images[::-1])
    assert case.modalities == MODALITIES[::-1]
    assert case.name == "Tiny_case_001"
    np.testing.assert_allclose(case.affine, LPS_AFFINE)
    np.testing.assert_array_equal(case.channels[0], images[-1].data)
    moved = Image(images[0].data, name="t1ce", affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="not on one grid"):
        case_from_layers([images[0], moved])
    with pytest.raises(ValueError, match="No image layers"):
        case_from_layers([])


REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


@pytest.mark.skipif(not REALDATA.is_dir(), reason="the real MRI cases (../shared/realdata) are absent")
@pytest.mark.parametrize("folder, n_labels", [("open_ms_patient19", 1), ("TCGA-DU-7294", 0)])
def test_reader_keeps_real_cases_on_their_own_affine(folder, n_labels):
    layers = _layers(REALDATA / folder)
    images = [layer for layer in layers if isinstance(layer, Image)]
    assert sorted(layer.name for layer in images) == sorted(["t1", "t1ce", "t2", "flair"])
    assert sum(isinstance(layer, Labels) for layer in layers) == n_labels
    for layer in layers:
        stored = nib.load(layer.metadata["source_paths"][0])
        np.testing.assert_allclose(layer_world_affine(layer), stored.affine, atol=1e-4)
    if n_labels:
        label = next(layer for layer in layers if isinstance(layer, Labels))
        assert "lesion" in list(label.features["class"])
        lesion = np.argwhere(label.data > 0)[0]
        flair = next(layer for layer in images if layer.name == "flair")
        np.testing.assert_allclose(label.data_to_world(lesion), flair.data_to_world(lesion))


def _oblique(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, 1.5, 2.0])
    affine[:3, 3] = [-20.0, 12.0, 5.0]
    return affine


@pytest.mark.filterwarnings("ignore:Non-orthogonal slicing")  # napari's 2D view of an oblique grid
@pytest.mark.parametrize(
    "affine",
    [np.diag([2.0, 2.0, 2.5, 1.0]), np.diag([-2.0, -2.0, 2.5, 1.0]), np.diag([-1.0, 1.0, 1.0, 1.0]), _oblique(20)],
    ids=["RAS", "LPS", "LAS", "oblique"],
)
def test_a_known_voxel_lands_at_its_world_position_in_every_layer(make_tiny_case, affine):
    layers = _layers(make_tiny_case(affine))
    assert len(layers) == 5
    voxel = np.array([10, 6, 5])
    expected = (affine @ np.r_[voxel, 1])[:3]
    for layer in layers:
        np.testing.assert_allclose(layer.data_to_world(voxel), expected, atol=1e-6)
    label = next(layer for layer in layers if isinstance(layer, Labels))
    assert label.data[tuple(voxel)] == 1  # the necrotic centre of the tiny tumour


def test_reader_opens_a_dicom_study_on_the_t1_grid(tmp_path):
    """A DICOM study folder (File > Open, drag and drop) opens as one layer per modality on its world affine."""
    from _dicom import write_series

    rng = np.random.default_rng(0)
    for number, description in ((3, "T1 SE"), (4, "T1 SE POST GD"), (5, "T2 TSE"), (6, "FLAIR")):
        write_series(tmp_path / "study" / str(number), rng.integers(0, 500, (20, 24, 12)).astype(np.float32),
                     description=description, number=number, study_uid="1.2.3.4", orientation="axial HFP")
    layers = _layers(tmp_path / "study")
    assert [layer.name for layer in layers] == list(MODALITIES)
    from napari_segxai.core.io.dicom import read_series, read_study

    _, affine = read_series(read_study(tmp_path / "study" / "3").series[0])
    for layer in layers:
        np.testing.assert_allclose(layer_world_affine(layer), affine, atol=1e-5)
        assert layer.metadata["segxai_case"].startswith("study-")
