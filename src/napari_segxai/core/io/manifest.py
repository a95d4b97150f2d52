"""The training manifest (``training/manifest.json``): what TracIn needs to replay or attribute training.

The format is documented in docs/training_format.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import write_text


MANIFEST_FORMAT = "segxai-training/1"


def read_manifest(path: str | Path) -> dict:
    """A training manifest with checkpoint paths resolved to absolute paths."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "training" / "manifest.json"
    if not path.is_file():
        raise ValueError(f"Training manifest {path} does not exist; train with segxai train or give its path.")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} training manifest.")
    for ckpt in manifest["checkpoints"]:
        ckpt["path"] = str((path.parent / ckpt["path"]).resolve())
    return manifest


def write_manifest(out: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` (stamped with :data:`MANIFEST_FORMAT`) as ``out/training/manifest.json``; its path."""
    path = Path(out) / "training" / "manifest.json"
    return write_text(path, json.dumps({"format": MANIFEST_FORMAT, **manifest}, indent=1))
