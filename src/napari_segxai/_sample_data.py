"""napari sample data: the SegXAI demo case (a synthetic tumour grown in MNI152 anatomy)."""

from __future__ import annotations


def make_demo_case() -> list[tuple]:
    """The demo case's layers: four modalities and its reference labels, on the case's affine."""
    from ._layers import case_layer_data
    from .core.case import load_case
    from .core.synth import demo_case_path

    return case_layer_data(load_case(demo_case_path()))
