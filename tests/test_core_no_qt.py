"""The core imports without napari or Qt, so it runs in notebooks, on the command line and on servers."""

from __future__ import annotations

import json
import subprocess
import sys


GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")

SCRIPT = """
import importlib, json, pkgutil, sys
import napari_segxai.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, core.__name__ + ".")]
names += ["napari_segxai.cli._common", "napari_segxai.cli.segment"]
for name in names:
    importlib.import_module(name)
gui = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"imported": names, "gui": gui}))
"""


def test_core_modules_import_no_gui_toolkit():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(GUI_MODULES)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "napari_segxai.core.model.inference" in report["imported"]
    assert "napari_segxai.core.model.card" in report["imported"]
    assert report["gui"] == [], f"core imported GUI modules: {report['gui']}"
