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
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.io.generated_cases import demo_case_path

    return load_case(demo_case_path())


def test_sample_data_opens_the_demo_case(demo_case):
    from napari_segxai._sample_data import make_demo_case

    layers = make_demo_case()
    assert [kind for _, _, kind in layers] == ["image"] * 4 + ["labels"]
    assert [kwargs["name"] for _, kwargs, _ in layers[:4]] == list(demo_case.modalities)
    for data, kwargs, _ in layers:
        assert data.shape == demo_case.shape
        np.testing.assert_allclose(kwargs["affine"], demo_case.affine)


def test_the_demo_case_is_on_the_1mm_template_with_every_compartment_where_its_sequence_shows_it(demo_case):
    from napari_segxai.core.io.generated_cases import demo_case_path, read_ground_truth

    assert demo_case.shape == (197, 233, 189)  # nilearn's MNI152 at 1 mm
    np.testing.assert_allclose(np.linalg.norm(demo_case.affine[:3, :3], axis=0), 1.0)
    assert {int(v) for v in np.unique(demo_case.label)} == {0, 1, 2, 4}
    signature = read_ground_truth(demo_case_path())["modality_signature"]
    strongest = {name: max(row, key=lambda m: abs(row[m])) for name, row in signature.items()}
    assert strongest["edema"] in {"flair", "t2"}, signature
    # Enhancing tumour shows on T1ce, where oedema does not (on FLAIR both can be bright, as in TCGA-FG-6692).
    enhancing, edema = signature["enhancing"], signature["edema"]
    assert enhancing["t1ce"] > 1.5 and enhancing["t1ce"] - edema["t1ce"] > 1.5, signature


@pytest.mark.slow
def test_demo_writes_the_segmentation_relevance_and_a_picture_of_the_viewer(demo_case, tmp_path, capsys, qapp,
                                                                            monkeypatch):
    """The bundled model on the demo case: segmentation, relevance for every tumour class, the viewer picture,
    and every dock showing its result."""
    from napari_segxai._qt import demo_viewer

    kept = []
    monkeypatch.setattr(demo_viewer, "_finish", lambda viewer, interactive: kept.append(viewer))
    shot = tmp_path / "docs" / "screenshot.png"
    out = tmp_path / "out"
    status = demo.run(_args("--out", str(out), "--headless", "--screenshot", str(shot)))
    assert status == 0
    (viewer,) = kept
    try:
        assert_every_dock_shows_its_result(viewer)
        # the clearest layer on top: the largest class (oedema) on the sequence that carries it (FLAIR, Shapley)
        assert viewer.layers.selection.active.name == f"edema · flair · {demo.DEMO_METHOD}"
        for name, widget in viewer.window.dock_widgets.items():  # what each tab shows (looked at)
            widget.grab().save(str(tmp_path / f"dock_{name.replace(' ', '_')}.png"))
    finally:
        viewer.close()
    printed = capsys.readouterr().out
    import re

    dice = re.search(r"Dice against the case's ground truth: whole tumour (\d\.\d+)", printed)
    assert dice and float(dice.group(1)) >= 0.85, printed  # 0.893 measured (2026-12-06, segxai demo)
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
    # the demo ends with the case report, TracIn evidence included (the index ships with the model)
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    assert f"Case report: {out / 'report' / 'report.html'}" in printed
    assert "<td>proponent</td>" in page and "<td>opponent</td>" in page and demo.DEMO_METHOD in page
    assert (out / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"


def assert_every_dock_shows_its_result(viewer) -> None:
    """Segment, Explain, Trust, RoI importance and Training evidence each show the demo's result; Explain is raised."""
    docks = dict(viewer.window.dock_widgets)
    assert set(docks) >= {"View plane", "Segment", "Explain", "Trust", "RoI importance", "Training evidence"}
    segment, explain, trust = docks["Segment"], docks["Explain"], docks["Trust"]
    roi, evidence = docks["RoI importance"], docks["Training evidence"]
    assert " s on " in segment.status.text() and "in distribution" in segment.status.text()
    assert explain.relevance_layers() and "relevance layers (saliency" in explain.status.text()
    assert explain.trust.label.text().startswith(("randomisation passed", "FAILS")), explain.trust.label.text()
    assert not explain.visibleRegion().isEmpty(), "the Explain tab is not the one shown"
    assert trust.table.columnCount() == 3 and "pass the randomisation check" in trust.status.text()
    from napari_segxai.core.trust.verdict import VERDICT_STEPS

    assert trust.max_steps.value() == VERDICT_STEPS  # the settings the table was measured with
    assert roi.current() is not None and not roi.running
    assert set(roi.current().importance.class_names) == {"necrosis", "edema", "enhancing"}
    assert evidence.proponents.count() > 0 and evidence.opponents.count() > 0 and not evidence.drawing
    assert "TracIn" in evidence.status.text()


def test_demo_without_a_display_still_segments(demo_case, make_tiny_card, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(demo.sys, "platform", "linux")
    out = tmp_path / "out"
    assert demo.run(_args("--model", str(make_tiny_card(96)), "--out", str(out), "--method", "none")) == 0
    assert [p.name.endswith("_seg.nii.gz") for p in out.iterdir()] == [True]
    assert not (out / "demo_viewer.png").exists()
    assert "No display" in capsys.readouterr().out


def test_demo_case_runs_the_pipeline_on_a_dicom_study_the_presenter_brings(make_tiny_card, tmp_path, capsys,
                                                                            monkeypatch):
    """``segxai demo --case STUDY --model CARD``: the study's four series become the case; nothing is written into it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _dicom import write_series

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(demo.sys, "platform", "linux")
    study = tmp_path / "study"
    rng = np.random.default_rng(0)
    for number, description in enumerate(("t1_mprage", "t1_mprage_post_gd", "t2_tse", "t2_flair"), start=3):
        write_series(study / description, rng.uniform(0, 500, (24, 28, 12)), description=description, number=number,
                     study_uid="1.2.826.0.1.3680043.8.498.55")
    before = sorted(p.name for p in study.rglob("*"))
    out = tmp_path / "out"
    assert demo.run(_args("--case", str(study), "--model", str(make_tiny_card(8)), "--out", str(out),
                          "--method", "none")) == 0
    printed = capsys.readouterr().out
    assert f"Case: {study}" in printed and "Preparing the demo case" not in printed
    (seg,) = out.glob("*_seg.nii.gz")
    assert nib.load(seg).shape == (24, 28, 12)
    assert sorted(p.name for p in study.rglob("*")) == before


def test_demo_case_that_does_not_exist_is_a_sentence(tmp_path):
    with pytest.raises(ValueError, match="No such file or folder"):
        demo.run(_args("--case", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--method", "none"))


def test_demo_refuses_a_screenshot_that_is_not_png_and_an_unknown_method(tmp_path):
    with pytest.raises(ValueError, match="must name a .png file"):
        demo.run(_args("--out", str(tmp_path), "--screenshot", str(tmp_path / "shot.jpg")))
    with pytest.raises(ValueError, match="Unknown method 'magic'"):
        demo.run(_args("--out", str(tmp_path), "--method", "magic"))
    assert list(tmp_path.iterdir()) == []


def _manifest_key(kind: str, command: str) -> dict:
    """The napari.yaml contribution of ``kind`` (sample_data, widgets) made by ``command``."""
    from importlib.resources import files

    import yaml

    manifest = yaml.safe_load(files("napari_segxai").joinpath("napari.yaml").read_text())
    (entry,) = [c for c in manifest["contributions"][kind] if c["command"] == f"napari-segxai.{command}"]
    return entry


def test_the_sample_opens_the_demo_case_with_the_demo_model_in_the_segment_widget(make_napari_viewer, demo_case):
    """File > Open Sample > SegXAI demo case, then Plugins > Segment: the case's channels and the demo card are chosen."""
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.io.paths import demo_model_card_path

    sample = _manifest_key("sample_data", "make_demo_case")
    assert sample["display_name"] == "SegXAI demo case"
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segxai", sample["key"])
    assert [layer.name for layer in viewer.layers] == [*demo_case.modalities, f"{demo_case.name} reference"]
    _, widget = viewer.window.add_plugin_dock_widget(
        "napari-segxai", _manifest_key("widgets", "make_segment_widget")["display_name"]
    )
    chosen = widget.chosen_layers()
    assert [layer.name for layer in chosen] == list(demo_case.modalities)
    assert all(layer.metadata["segxai_case"] == demo_case.name for layer in chosen)
    card = load_model_card(widget.card_path.text())
    assert card.path.resolve() == demo_model_card_path("demo3d").resolve()
    assert widget.card_info.text().startswith(f"{card.name}: ")
    # With the widget open on another card, opening the sample again brings the demo model back.
    widget.set_model_card(demo_model_card_path("demo2d"))
    viewer.layers.clear()
    viewer.open_sample("napari-segxai", sample["key"])
    assert widget.chosen_layers() == list(viewer.layers[:4])
    assert load_model_card(widget.card_path.text()).path.resolve() == card.path.resolve()


def test_every_widget_of_the_manifest_docks_from_the_plugins_menu(make_napari_viewer):
    """Plugins > SegXAI > each widget: napari builds it with the viewer (the annotation it looks for) and docks it."""
    from importlib.resources import files

    import yaml

    manifest = yaml.safe_load(files("napari_segxai").joinpath("napari.yaml").read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    widgets = manifest["contributions"]["widgets"]
    assert len(widgets) >= 7
    viewer = make_napari_viewer()
    for entry in widgets:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-segxai", entry["display_name"])
        assert type(widget).__name__ == commands[entry["command"]].rsplit(":", 1)[1]
        assert getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer  # napari hands over a proxy
        assert dock.widget() is not None
