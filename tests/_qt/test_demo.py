"""``segxai demo`` end to end (demo case, a tiny model, the viewer picture) and the napari sample."""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import pytest

from napari_segxai.cli import demo


def _args(*argv):
    parser = argparse.ArgumentParser()
    demo.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


@pytest.fixture(scope="module")
def demo_case():
    """The demo case (built once into the user cache)."""
    from napari_segxai.core.case import load_case
    from napari_segxai.core.synth import demo_case_path

    return load_case(demo_case_path())


def test_sample_data_opens_the_demo_case(demo_case):
    from napari_segxai._sample_data import make_demo_case

    layers = make_demo_case()
    assert [kind for _, _, kind in layers] == ["image"] * 4 + ["labels"]
    assert [kwargs["name"] for _, kwargs, _ in layers[:4]] == list(demo_case.modalities)
    for data, kwargs, _ in layers:
        assert data.shape == demo_case.shape
        np.testing.assert_allclose(kwargs["affine"], demo_case.affine)


@pytest.mark.slow
def test_demo_writes_the_segmentation_relevance_and_a_picture_of_the_viewer(demo_case, tmp_path, capsys, qapp):
    """The bundled model on the demo case: segmentation, relevance for every tumour class, the viewer picture."""
    shot = tmp_path / "docs" / "screenshot.png"
    out = tmp_path / "out"
    status = demo.run(_args("--out", str(out), "--headless", "--screenshot", str(shot)))
    assert status == 0
    printed = capsys.readouterr().out
    assert "Dice against the case's ground truth: whole tumour 0.9" in printed
    (seg,) = out.glob("*_seg.nii.gz")
    img = nib.load(seg)
    np.testing.assert_allclose(img.affine, demo_case.affine, atol=1e-5)
    assert img.shape == demo_case.shape
    maps = sorted(out.glob(f"*_{demo.DEMO_METHOD}_*.nii.gz"))
    assert len(maps) == 4  # necrosis, edema, enhancing and the target masks
    edema = nib.load(next(m for m in maps if m.name.endswith("_edema.nii.gz")))
    assert edema.shape == demo_case.shape + (4,)
    np.testing.assert_allclose(edema.affine, demo_case.affine, atol=1e-5)
    # by construction oedema shows on FLAIR and enhancement on T1ce: the relevance says so too
    assert "edema: flair" in printed and "enhancing: t1ce" in printed
    picture = out / "demo_viewer.png"
    assert shot.read_bytes() == picture.read_bytes()
    from PIL import Image

    rgb = np.asarray(Image.open(picture).convert("RGB")).astype(float)
    assert rgb.shape[0] >= 600 and rgb.shape[1] >= 900
    assert rgb.std() > 20, "the viewer picture is blank"
    assert str(picture) in printed


def test_demo_without_a_display_still_segments(demo_case, make_tiny_card, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(demo.sys, "platform", "linux")
    out = tmp_path / "out"
    assert demo.run(_args("--model", str(make_tiny_card(96)), "--out", str(out), "--method", "none")) == 0
    assert [p.name.endswith("_seg.nii.gz") for p in out.iterdir()] == [True]
    assert not (out / "demo_viewer.png").exists()
    assert "No display" in capsys.readouterr().out


def test_demo_refuses_a_screenshot_that_is_not_png_and_an_unknown_method(tmp_path):
    with pytest.raises(ValueError, match="must name a .png file"):
        demo.run(_args("--out", str(tmp_path), "--screenshot", str(tmp_path / "shot.jpg")))
    with pytest.raises(ValueError, match="Unknown method 'magic'"):
        demo.run(_args("--out", str(tmp_path), "--method", "magic"))
    assert list(tmp_path.iterdir()) == []
