"""The sanity check on the bundled demo model and the demo case: vanilla gradient passes, a weight-blind map fails."""

from __future__ import annotations

import pytest

from _trust import SobelOfInput
from napari_segxai.core.model.loading import load_model_card
from napari_segxai.core.io.paths import demo_model_card_path
from napari_segxai.core.io.generated_cases import demo_case_path, load_synth_case
from napari_segxai.core.trust import case_problem, randomisation_test


@pytest.mark.slow
def test_vanilla_gradient_passes_and_an_edge_filter_fails_on_the_demo_model():
    path = demo_model_card_path("demo3d")
    if not path.is_file():
        pytest.skip(f"the bundled demo model is absent ({path})")
    synth = load_synth_case(demo_case_path())
    problem = case_problem(synth.case, load_model_card(path), classes=["enhancing"], margin=8, device="cpu")
    result = randomisation_test(problem, ["saliency", SobelOfInput()], modes=("cascading",), max_steps=1)
    verdicts = {(v.method, v.class_name): v for v in result.verdicts()}
    assert len(result.layers) > 10
    for name in ("enhancing",):
        assert verdicts[("saliency", name)].passes, verdicts[("saliency", name)]
        assert not verdicts[("sobel_of_input", name)].passes
        assert verdicts[("sobel_of_input", name)].spearman == pytest.approx(1.0)
