"""What the Trust widget shows: the measures' rows of its table and the cascading-randomisation chart."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from qtpy.QtWidgets import QWidget

from .mpl_canvas import MplCanvasWidget

if TYPE_CHECKING:
    import napari

SIMILARITIES = (("Spearman", "spearman"), ("SSIM", "ssim"), ("top-k overlap", "top_k"))
PASS_COLOR, FAIL_COLOR = "#4caf50", "#f44336"

# (field of core.trust.CaseQualityRow, row label, tooltip)
MEASURES = (
    ("randomisation_passes", "Randomisation",
     "passes when the map of the fully randomised network has a Spearman correlation below 0.5 with the "
     "trained network's map: the map depends on what the model learned"),
    ("randomisation_spearman", "Spearman, randomised",
     "rank correlation of |relevance| between the trained and the fully randomised network (lower is better)"),
    ("randomisation_ssim", "SSIM, randomised",
     "structural similarity of |relevance| between the trained and the fully randomised network (lower is better)"),
    ("randomisation_top_k", "Top-k, randomised",
     "share of the k most relevant voxels both maps share, k = the region's size (lower is better)"),
    ("faithfulness", "Faithfulness",
     "Pearson r between relevance summed over random voxel subsets and the output drop when they are removed "
     "(higher is better)"),
    ("deletion_auc", "Deletion AUC",
     "area under the output curve as the most relevant voxels are removed first (lower is better)"),
    ("deletion_auc_random", "Deletion AUC, random",
     "the same with voxels removed in random order: the reference the method should beat"),
    ("max_sensitivity", "Max-sensitivity",
     "largest relative change of the map under small input noise (lower is better)"),
    ("above_threshold", "Complexity",
     "share of the crop's voxels above 10% of the largest |relevance| (lower: a sparser map)"),
    ("seconds_explain", "Seconds / explanation", "one explanation of every class on the crop"),
)


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
