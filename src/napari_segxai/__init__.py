"""napari-segxai: explain what a segmentation model segmented, and why."""

__version__ = "0.1.0"
