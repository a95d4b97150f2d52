"""Qt dock widgets of napari-segxai (imported only when napari builds a widget)."""

from .segment_widget import SegmentWidget

__all__ = ["SegmentWidget"]
