"""A dock widget base that owns one matplotlib canvas styled like the napari theme (napari-matplotlib style)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import matplotlib.style as mplstyle
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.utils.theme import get_theme
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from ..core.io.files import atomic_path

if TYPE_CHECKING:
    import napari


def style_from_theme(theme) -> dict[str, str]:
    """Matplotlib rc settings with the colours of a napari theme (figure background = dock background)."""
    text, secondary = theme.text.as_hex(), theme.secondary.as_hex()
    return {
        "figure.facecolor": theme.background.as_hex(),
        "figure.edgecolor": theme.background.as_hex(),
        "savefig.facecolor": theme.background.as_hex(),
        "axes.facecolor": theme.background.as_hex(),
        "axes.edgecolor": secondary,
        "axes.labelcolor": text,
        "axes.titlecolor": text,
        "text.color": text,
        "xtick.color": secondary,
        "xtick.labelcolor": text,
        "ytick.color": secondary,
        "ytick.labelcolor": text,
        "grid.color": theme.foreground.as_hex(),
        "legend.facecolor": theme.foreground.as_hex(),
        "legend.edgecolor": secondary,
        "legend.labelcolor": text,
        "hatch.color": text,
    }


class MplCanvasWidget(QWidget):
    """Owns a FigureCanvasQTAgg that follows the viewer's theme; subclasses draw into ``figure`` in :meth:`draw`."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer = viewer
        self.mpl_style = style_from_theme(get_theme(viewer.theme))
        with mplstyle.context(self.mpl_style):
            self.figure = Figure(figsize=(4, 3), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(240)
        self.canvas_layout = QVBoxLayout(self)
        self.canvas_layout.addWidget(self.canvas)
        viewer.events.theme.connect(self._on_theme_changed)

    def draw(self) -> None:
        """Draw the chart into ``self.figure`` (the figure is cleared before); override in subclasses."""

    def redraw(self) -> None:
        """Clear the figure and draw it again under the theme's style."""
        self.figure.clear()
        with mplstyle.context(self.mpl_style):
            self.figure.set_facecolor(self.mpl_style["figure.facecolor"])
            self.draw()
        self.canvas.draw_idle()

    def save_png(self, path: str | Path, dpi: int = 150) -> Path:
        """Save the chart as a PNG (atomically) and return the path."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"{path.name} is not a .png name; save the chart as .png.")
        with atomic_path(path, suffix=".png") as temporary:
            temporary.write_bytes(self.png_bytes(dpi))
        return path

    def png_bytes(self, dpi: int = 150) -> bytes:
        """The chart as PNG bytes, in the napari theme's colours."""
        import io

        buffer = io.BytesIO()
        with mplstyle.context(self.mpl_style):
            self.figure.savefig(buffer, format="png", dpi=dpi, facecolor=self.mpl_style["figure.facecolor"])
        return buffer.getvalue()

    def _on_theme_changed(self, event: Any = None) -> None:
        """Take the new theme's colours and redraw."""
        self.mpl_style = style_from_theme(get_theme(self.viewer.theme))
        self.redraw()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop following the theme when the widget closes."""
        self.viewer.events.theme.disconnect(self._on_theme_changed)
        super().closeEvent(event)
