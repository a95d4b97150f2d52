"""The npe2 manifest: valid, found through the entry point, shipped inside the package, cheap to read."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import napari_segxai

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(napari_segxai.__file__).resolve().parent


def test_npe2_validates_the_manifest_and_its_imports():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-segxai", "--imports"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_npe2_finds_the_manifest_through_the_entry_point():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-segxai")
    assert manifest.name == "napari-segxai"
    contributions = manifest.contributions
    (reader,) = contributions.readers
    assert reader.accepts_directories
    assert set(reader.filename_patterns) == {"*.nii", "*.nii.gz", "*.zip", "*.dcm"}
    assert {tuple(w.layer_types) for w in contributions.writers} == {("labels",), ("image",)}
    assert [(s.key, s.display_name) for s in contributions.sample_data] == [("demo", "SegXAI demo case")]
    assert "Segment" in [w.display_name for w in contributions.widgets]


def test_manifest_ships_inside_the_package_and_the_root_file_points_at_it():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    entry = config["project"]["entry-points"]["napari.manifest"]["napari-segxai"]
    module, resource = entry.split(":")
    assert module == "napari_segxai" and (PACKAGE / resource).is_file()
    assert "src/napari_segxai" in config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    root = REPO / "napari.yaml"
    assert root.is_symlink() and root.resolve() == (PACKAGE / "napari.yaml").resolve()


def test_reading_the_manifest_and_the_reader_loads_neither_torch_nor_qt():
    code = (
        "import sys\n"
        "from npe2 import PluginManifest\n"
        "PluginManifest.from_distribution('napari-segxai')\n"
        "import napari_segxai._reader, napari_segxai._writer, napari_segxai._sample_data\n"
        "heavy = [m for m in ('torch', 'monai', 'PyQt6', 'PyQt5', 'qtpy', 'napari_segxai._qt') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import hatchling"], capture_output=True).returncode != 0,
    reason="hatchling (in the dev extra) is not installed, so no wheel can be built offline",
)
def test_the_wheel_contains_the_manifest_and_the_bundled_models(tmp_path):
    import json
    import posixpath
    import zipfile

    import yaml

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_segxai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "napari_segxai/napari.yaml" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "napari_segxai:napari.yaml" in zipfile.ZipFile(wheel).read(entry_points).decode()
    models = REPO / "sample_data" / "models"
    assert {"demo2d", "demo3d"} <= {p.name for p in models.iterdir()}
    for model in sorted(p for p in models.iterdir() if p.is_dir()):
        inside = f"napari_segxai/sample_data/models/{model.name}"
        card = yaml.safe_load((model / "card.yaml").read_text())
        expected = {f"{inside}/card.yaml", f"{inside}/{card['weights']}"}
        manifest = model / "training" / "manifest.json"
        if manifest.is_file():
            checkpoints = [c["path"] for c in json.loads(manifest.read_text())["checkpoints"]]
            assert checkpoints, f"{manifest} lists no checkpoints"
            expected |= {f"{inside}/training/manifest.json"} | {posixpath.normpath(f"{inside}/training/{c}") for c in checkpoints}
        assert expected <= names, f"the wheel lacks {sorted(expected - names)}"
    # the links to real scans the demo models trained on stay out of the package (the scans are not ours)
    assert not [n for n in names if "realdata" in n or n.endswith(".nii.gz")]
