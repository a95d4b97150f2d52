"""Helpers for viewer tests."""

from napari_segxai._reader import napari_get_reader


def open_case(viewer, path) -> None:
    """Add a case's layers to ``viewer`` through the plugin's reader."""
    for data, kwargs, kind in napari_get_reader(str(path))(str(path)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
