"""What the Trust widget shows: the measures' rows of its table and the cascading-randomisation chart."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from qtpy.QtWidgets import QWidget

from .mpl_canvas import MplCanvasWidget

if TYPE_CHECKING:
    import napari

PASS_COLOR, FAIL_COLOR = "#4caf50", "#f44336"


def table_measures() -> tuple:
    """The table's rows, from the core registries: (CaseQualityRow field, label, tooltip), the verdict first."""
    from ..core.trust.assess import randomisation_columns
    from ..core.trust.quality import metric_columns

    randomisation = randomisation_columns()
    shown = (randomisation[-1], *randomisation[:-1], *metric_columns(case_table=True))
    return tuple((c.name, c.label, c.help) for c in shown)


def similarity_choices() -> tuple:
    """(label, name) of every registered similarity measure, for the chart's measure box."""
    from ..core.trust import similarity_measures

    return tuple((m.label, m.name) for m in similarity_measures())


def cell_text(measure: str, value: float) -> str:
    """How the table writes one number."""
    if math.isnan(value):
        return "n/a"
    if measure == "randomisation_passes":
        return "passes" if value else "fails"
    return f"{value:.2f}" if measure.startswith("seconds") else f"{value:.3f}"


class RandomisationChart(MplCanvasWidget):
    """Similarity to the trained network's map against the layers randomised, for one class of the last check."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.result = None            # core.trust.RandomisationResult
        self.class_name: Optional[str] = None
        self.measure = "spearman"
        self.canvas.setMinimumHeight(200)
        self.canvas_layout.setContentsMargins(0, 0, 0, 0)
        self.redraw()

    def show_result(self, result, class_name: Optional[str], measure: str) -> None:
        """Draw ``result`` for one class and similarity measure."""
        self.result, self.class_name, self.measure = result, class_name, measure
        self.redraw()

    def draw(self) -> None:
        """The core's randomisation panel for the chosen class (a hint when there is no check yet)."""
        from ..core.trust.plots import draw_randomisation

        if self.result is None or self.class_name is None:
            axes = self.figure.add_subplot()
            axes.set_axis_off()
            axes.text(0.5, 0.5, "No check yet.\nPress Run: the cascading randomisation plot appears here.",
                      ha="center", va="center", transform=axes.transAxes)
            return
        draw_randomisation(self.figure, self.result, measure=self.measure, classes=[self.class_name], title=None)
