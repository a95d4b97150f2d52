"""Where the data bundled with napari-segxai lives (demo models, sample cases)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[2]  # src/napari_segxai


def sample_data_dir() -> Path:
    """The bundled ``sample_data`` folder: inside the package when installed from a wheel, else the repository's."""
    packaged = _PACKAGE / "sample_data"
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent.parent / "sample_data"


def demo_model_card_path(kind: str = "demo3d") -> Path:
    """The card of a bundled demo model (``demo3d`` or ``demo2d``); the file may not exist yet."""
    return sample_data_dir() / "models" / kind / "card.yaml"
