"""The RoI importance chart: grouped bars per explained class, that say their value under the mouse and report clicks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QWidget

from ..core.roi_chart import draw_roi_bars, legend_entries
from .mpl_canvas import MplCanvasWidget
from .roi_summary import RoiEntry

if TYPE_CHECKING:
    import napari


class RoiBars(MplCanvasWidget):
    """One bar per region (or modality) in a group per explained class, of one :class:`RoiEntry`."""

    said = Signal(str)                  # what the bar under the mouse says
    clicked = Signal(str, int, int)     # a bar was clicked: (view "region" or "modality", class index, item index)

    def __init__(self, viewer: napari.viewer.Viewer, parent: Optional[QWidget] = None):
        super().__init__(viewer, parent)
        self.canvas_layout.setContentsMargins(0, 0, 0, 0)
        self.entry: Optional[RoiEntry] = None
        self.modalities = False                               # the modality view rather than the regions
        self.signed = False                                   # positive and negative parts stacked
        self.bars: list[tuple[Any, str, int, int, str]] = []  # (patch, view, class index, item index, part)
        self._hovered = None
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)

    def plot(self, entry: Optional[RoiEntry], *, modalities: bool, signed: bool) -> None:
        """Draw ``entry`` in the region or modality view, with or without the signed split."""
        self.entry, self.modalities, self.signed = entry, modalities, signed
        self.redraw()

    def draw(self) -> None:
        """Grouped bars: one group per explained class, one bar per region (or modality)."""
        self.bars = []
        self._hovered = None
        axes = self.figure.add_subplot()
        entry = self.entry
        if entry is None:
            axes.set_axis_off()
            axes.text(0.5, 0.5, "No relevance result yet.\nRun Explain; its result appears here.",
                      ha="center", va="center", transform=axes.transAxes)
            return
        table = entry.importance
        view = "modality" if self.modalities else "region"
        positive = table.modality_positive if view == "modality" else table.positive
        signed = self.signed and positive is not None
        edge = self.mpl_style["axes.edgecolor"]
        self.bars = draw_roi_bars(axes, table, view=view, signed=signed, region_colors=entry.colors, edge=edge,
                                  title=f"{entry.case_name} · {table.method}" if view == "region"
                                  else f"{entry.case_name} · {table.modality_source or table.method}")
        handles, labels = legend_entries(axes, signed=signed, edge=edge)
        if handles:
            self.figure.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize=7,
                               frameon=False)

    def bar_value(self, patch) -> str:
        """What a bar says, in words."""
        for candidate, view, k, i, _ in self.bars:
            if candidate is patch:
                table = self.entry.importance
                name = (table.modality_names if view == "modality" else table.region_names)[i]
                if view == "modality":
                    total = table.modality_share[k, i]
                    split = (None if table.modality_positive is None
                             else (table.modality_positive[k, i], table.modality_negative[k, i]))
                    where = f"modality {name}"
                else:
                    total, split = table.importance[k, i], (table.positive[k, i], table.negative[k, i])
                    where = f"region {name} ({table.region_voxels[i]} voxels)"
                text = f"{table.class_names[k]}: {total:.1%} of |relevance| in {where}"
                if split is not None:
                    text += f" (+{split[0]:.1%}, −{split[1]:.1%})"
                return text
        return ""

    def _bar_at(self, event) -> Optional[tuple]:
        """The bar under a mouse event, if any."""
        if event.inaxes is None:
            return None
        for bar in self.bars:
            if bar[0].contains(event)[0]:
                return bar
        return None

    def _on_motion(self, event) -> None:
        """Outline the bar under the mouse and say its value."""
        bar = self._bar_at(event)
        patch = None if bar is None else bar[0]
        if patch is self._hovered:
            return
        if self._hovered is not None:
            self._hovered.set_linewidth(0.4)
        if patch is not None:
            patch.set_linewidth(2.0)
            self.said.emit(self.bar_value(patch) + (" — click to show it" if bar[1] == "region" else
                                                    " — click to select its layer"))
        self._hovered = patch
        self.canvas.draw_idle()

    def _on_press(self, event) -> None:
        """Report a click on a bar."""
        bar = self._bar_at(event)
        if bar is not None:
            self.clicked.emit(bar[1], bar[2], bar[3])
