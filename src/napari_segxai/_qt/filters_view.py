"""The Network internals widget's filter pictures: the first layer's kernels per input sequence, or the chosen layer's
strongest-responding input patches on the case (and over training cases), drawn in the worker and shown as a grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

#: Screen pixels per montage pixel: a kernel's voxel, and a patch's voxel (patches are 16 voxels wide).
KERNEL_SCALE = 8
PATCH_SCALE = 2


@dataclass(frozen=True)
class Picture:
    """One montage as PNG bytes, with its caption and its place in the grid."""

    caption: str
    png: bytes
    row: int
    column: int


@dataclass(frozen=True)
class FilterPictures:
    """What the Filters option found: a title, the montages, and a sentence on what could not be shown."""

    title: str
    pictures: tuple[Picture, ...]
    note: str = ""


def filter_pictures(case, card, network, maps, *, training: int = 0, device=None, progress=None,
                    should_cancel=None) -> FilterPictures:
    """The kernels when ``maps`` is the first convolution's, else its first channels' strongest patches (worker)."""
    from ..core.internals.filters import first_convolution, kernel_montage, montage_png, patch_montage, strongest_patches
    from ..core.internals.outputs import PATCH_CHANNELS, PATCHES
    from ..core.model.preprocess import channel_indices

    try:
        first, kernels = first_convolution(network, len(card.modalities))
    except ValueError:
        first, kernels = None, None  # no Python modules to read kernels from: the patches still show what it does
    if maps.layer == first:
        pictures = tuple(Picture(sequence, montage_png(kernel_montage(kernels, i), scale=KERNEL_SCALE), 0, i)
                         for i, sequence in enumerate(card.modalities))
        return FilterPictures(f"{first}: its {kernels.shape[0]} kernels per input sequence (a row per filter, a tile "
                              f"per slice along the last axis; blue negative, red positive).", pictures)
    image = np.asarray(case.channels)[channel_indices(case, card)].astype(np.float32)
    channels = maps.channels[:PATCH_CHANNELS]
    pictures = []
    for i, channel in enumerate(channels):
        patches = strongest_patches(maps.maps[i], image, channel, count=PATCHES)
        labels = [f"({', '.join(map(str, p.centre))}) {p.response:.3g}" for p in patches]
        pictures.append(Picture(f"channel {channel} on {case.name}", montage_png(
            patch_montage(patches), signed=False, scale=PATCH_SCALE, row_labels=labels), 0, i))
    title = (f"{maps.layer}: the strongest input patches of its {len(channels)} most class-specific channels "
             f"(a row per patch: its centre voxel and response; a column per sequence: {', '.join(card.modalities)}; "
             "middle slice).")
    note = ""
    if training:
        from ..core.internals.training_patches import training_keys, training_patches

        try:
            training_keys(card, training)
        except ValueError as err:
            note = str(err)
        else:
            found = training_patches(card, maps.layer, channels, cases=training, count=PATCHES, network=network,
                                     device=device, progress=progress, should_cancel=should_cancel)
            note = found.note
            for i, channel in enumerate(found.channels):
                if found.patches[channel]:
                    patches = found.patches[channel]
                    pictures.append(Picture(f"channel {channel} over {len(found.cases)} training case(s)", montage_png(
                        patch_montage(patches), signed=False, scale=PATCH_SCALE,
                        row_labels=[f"{p.case} {p.response:.3g}" for p in patches]), 1, i))
    return FilterPictures(title, tuple(pictures), note)


class FiltersView(QWidget):
    """The title, then the filter pictures in a scrollable grid, each under its caption; hidden while there are none."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setMinimumHeight(240)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.scroll, 1)
        self.labels: list[QLabel] = []
        self.setVisible(False)

    def show_pictures(self, found: FilterPictures | None) -> None:
        """Replace what is shown with ``found`` (None: hide the view)."""
        self.labels = []
        self.title.setText("" if found is None else found.title)
        content = QWidget()
        grid = QGridLayout(content)
        for picture in () if found is None else found.pictures:
            cell = QVBoxLayout()
            cell.addWidget(QLabel(picture.caption))
            label = QLabel()
            pixmap = QPixmap()
            pixmap.loadFromData(picture.png, "PNG")
            label.setPixmap(pixmap)
            label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            cell.addWidget(label)
            grid.addLayout(cell, picture.row, picture.column, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
            self.labels.append(label)
        grid.setRowStretch(grid.rowCount(), 1)
        grid.setColumnStretch(grid.columnCount(), 1)
        self.scroll.setWidget(content)
        self.setVisible(found is not None)
