"""A horizontal strip of training-case thumbnails (proponents or opponents), and the drawing of its pictures."""

from __future__ import annotations

from typing import Any, Generator, Optional, Sequence

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from ..core.thumbnails import DEFAULT_SIZE, format_score

EVIDENCE_ROLE = Qt.ItemDataRole.UserRole
CAPTION_PX = 40       # two caption lines under a thumbnail
SCROLLBAR_PX = 18


def pixmap(image: np.ndarray) -> QPixmap:
    """A QPixmap of an (H, W, 3) uint8 picture (copied: Qt does not keep the numpy buffer)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    qimage = QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


def icon(picture: QPixmap) -> QIcon:
    """An icon that shows the picture untinted when its item is selected (the item's background marks it)."""
    out = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        out.addPixmap(picture, mode)
    return out


def placeholder(size: int) -> QPixmap:
    """The grey square shown while a thumbnail is being drawn."""
    blank = QPixmap(size, size)
    blank.fill(QColor(40, 40, 40))
    return blank


def no_picture(size: int) -> QPixmap:
    """The crossed-out square of evidence whose training case's files are not here."""
    blank = placeholder(size)
    painter = QPainter(blank)
    painter.setPen(QPen(QColor(110, 110, 110), 2))
    painter.drawLine(0, 0, size - 1, size - 1)
    painter.drawLine(0, size - 1, size - 1, 0)
    painter.end()
    return blank


def caption(evidence) -> str:
    """Case id, then class and score, under a thumbnail."""
    return f"{evidence.training_case}\n{evidence.train_class}  {format_score(evidence.score)}"


def tooltip(evidence) -> str:
    """What a thumbnail shows, in full."""
    centre = ", ".join(str(v) for v in evidence.centroid)
    box = " × ".join(f"{a}–{b}" for a, b in evidence.bbox)
    return (
        f"{evidence.training_case} ({evidence.key_name} {evidence.seed}): its {evidence.train_class} region, TracIn score "
        f"{evidence.score:+.4g}.\nSlice through voxel ({centre}); region box {box}.\n"
        "Outline: the case's reference labels. Click to open the case in the viewer."
    )


class EvidenceStrip(QListWidget):
    """One row of thumbnails, each with its training case id, class and score."""

    chosen = Signal(object)  # the Evidence of a clicked thumbnail

    def __init__(self, kind: str, size: int = DEFAULT_SIZE, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.kind = kind  # "proponents" or "opponents"
        self.thumbnail_size = int(size)
        self.setObjectName(f"{kind}_strip")
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setIconSize(QSize(self.thumbnail_size, self.thumbnail_size))
        self.setGridSize(QSize(self.thumbnail_size + 26, self.thumbnail_size + CAPTION_PX))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFixedHeight(self.thumbnail_size + CAPTION_PX + SCROLLBAR_PX)
        self.setToolTip(f"No {kind} yet: press Run.")
        self._drawn: set[int] = set()
        self.itemClicked.connect(self._clicked)
        self.itemActivated.connect(self._clicked)

    def show_evidence(self, items: Sequence[Any]) -> None:
        """Show one placeholder thumbnail per Evidence, with its caption; pictures come with :meth:`set_thumbnail`."""
        self.clear()
        self._drawn = set()
        blank = icon(placeholder(self.thumbnail_size))
        for evidence in items:
            item = QListWidgetItem(blank, caption(evidence))
            item.setData(EVIDENCE_ROLE, evidence)
            item.setToolTip(tooltip(evidence))
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self.addItem(item)
        self.setToolTip("" if items else f"No {self.kind} for this choice.")

    def set_thumbnail(self, row: int, image: np.ndarray) -> None:
        """Put the picture of row ``row`` in place of its placeholder."""
        item = self.item(row)
        if item is not None:
            item.setIcon(icon(pixmap(image)))
            self._drawn.add(row)

    def say_no_picture(self, note: str) -> None:
        """Cross out the rows left without a picture; their tooltips and the strip's say why (``note``)."""
        rows = [row for row in range(self.count()) if row not in self._drawn]
        crossed = icon(no_picture(self.thumbnail_size))
        for row in rows:
            item = self.item(row)
            item.setIcon(crossed)
            item.setToolTip(f"{tooltip(item.data(EVIDENCE_ROLE))}\n{note}")
        if rows:
            self.setToolTip(note)

    def has_picture(self, row: int) -> bool:
        """Whether row ``row`` shows its thumbnail (not the placeholder)."""
        return row in self._drawn

    def evidence(self, row: int):
        """The Evidence shown at ``row``."""
        item = self.item(row)
        return None if item is None else item.data(EVIDENCE_ROLE)

    def evidences(self) -> list:
        """Every Evidence shown, left to right."""
        return [self.evidence(row) for row in range(self.count())]

    def _clicked(self, item: QListWidgetItem) -> None:
        evidence = item.data(EVIDENCE_ROLE)
        if evidence is not None:
            self.chosen.emit(evidence)


def draw_thumbnails(card, items: list[tuple[int, Any]], size: int) -> Generator[tuple[int, np.ndarray], None, str]:
    """(key, picture) for each (key, Evidence): its training case through its region, card colours, its class thicker.

    Each training case is regenerated (or read from the cache) once, however many of its regions are shown.
    A training case whose files are not here is skipped; the sentence returned says why ("" when none was).
    """
    from ..core.influence import TrainingCaseUnavailable, training_case, unavailable_note
    from ..core.thumbnails import class_label, thumbnail

    by_seed: dict[int, list[tuple[int, Any]]] = {}
    for key, evidence in items:
        by_seed.setdefault(int(evidence.seed), []).append((key, evidence))
    missing = []
    for seed, group in by_seed.items():
        try:
            case = training_case(card, seed)
        except TrainingCaseUnavailable as err:
            missing.append(err)
            continue
        for key, evidence in group:
            yield key, thumbnail(case, case.label, evidence.centroid, size=size, colors=card.classes,
                                 highlight=class_label(card.classes, evidence.train_class))
    return unavailable_note(missing)
