"""The default method (viewer, report, demo) passes model parameter randomisation for the bundled model."""

from __future__ import annotations

import pytest

from napari_segxai.core.attribution import DEFAULT_METHOD


@pytest.mark.slow
def test_the_default_method_passes_randomisation_for_the_bundled_model_and_gradient_x_input_does_not():
    from napari_segxai.core.model.card import default_model_card
    from napari_segxai.core.training.evaluate import HELD_OUT_SEED_START
    from napari_segxai.core.training.synth import generate_case
    from napari_segxai.core.trust import TrustSettings, assess_case

    case = generate_case(HELD_OUT_SEED_START + 1100).case  # held out (never trained on); all three classes predicted
    settings = TrustSettings(checks=("sanity",), modes=("cascading",), max_steps=2)
    trust = assess_case(case, default_model_card(), [DEFAULT_METHOD, "gradient_x_input"], settings=settings,
                        device="cpu", margin=8)
    verdicts = trust.sanity.verdicts()
    assert {v.class_name for v in verdicts} and all(v.passes for v in verdicts if v.method == DEFAULT_METHOD), verdicts
    assert not any(v.passes for v in verdicts if v.method == "gradient_x_input"), verdicts
