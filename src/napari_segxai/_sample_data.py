"""napari sample data: the SegXAI demo case (a synthetic tumour grown in MNI152 anatomy)."""

from __future__ import annotations


def make_demo_case() -> list[tuple]:
    """The demo case's layers: four modalities and its reference labels, on the case's affine.

    The image layers name the bundled 3D demo model (``Key.SUGGESTED_CARD``), which the
    dock widgets then choose for them. The viewer shows the case axial (``_orientation``).
    """
    from ._layers import Key, case_layer_data
    from ._orientation import watch_current_viewer
    from .core.io.nifti import load_case
    from .core.io.paths import demo_model_card_path
    from .core.io.generated_cases import demo_case_path

    layers = case_layer_data(load_case(demo_case_path()))
    card = demo_model_card_path("demo3d")
    if card.is_file():
        for _, kwargs, kind in layers:
            if kind == "image":
                kwargs["metadata"][Key.SUGGESTED_CARD] = str(card)
    watch_current_viewer()
    return layers
