"""Qt dock widgets of napari-segxai (imported only when napari builds a widget)."""

from .no_triton import keep_triton_out

keep_triton_out()  # before any widget imports torch inside the GUI process (see no_triton)

from .segment_widget import SegmentWidget  # noqa: E402

__all__ = ["SegmentWidget"]
