"""napari-segxai: explain what a segmentation model segmented, and why."""

__version__ = "0.1.0"

__all__ = ["TrainingRecorder"]


def __getattr__(name: str):
    """``TrainingRecorder`` (for recording your own training loop), imported only when asked for."""
    if name == "TrainingRecorder":
        from .core.training.recorder import TrainingRecorder

        return TrainingRecorder
    raise AttributeError(f"module 'napari_segxai' has no attribute {name!r}")
