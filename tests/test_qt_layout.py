"""The napari side stays in shape: small widget modules, layer metadata keys defined once, no CLI code in widgets."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_segxai"
MAX_LINES = 400


def test_widget_modules_are_small_and_do_not_import_the_cli():
    for path in sorted((PACKAGE / "_qt").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= MAX_LINES, f"{path.name} has more than {MAX_LINES} lines; split it"
        assert not re.search(r"from \.\.cli|napari_segxai\.cli", text), f"{path.name} imports the CLI"


def test_layer_metadata_keys_are_written_out_only_in_the_layers_module():
    literal = re.compile(r"""["']segxai_[a-z_]+["']|\bsegxai_[a-z_]+=""")
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "_layers.py":
            found = literal.findall(path.read_text(encoding="utf-8"))
            assert not found, f"{path.relative_to(PACKAGE)} spells out {found}; use _layers.Key"
