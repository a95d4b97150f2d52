"""The Explain widget shows the estimated cost beside Run and asks before a long explanation starts."""

from __future__ import annotations

from napari_segxai._qt import cost_gate
from napari_segxai._qt.explain_widget import ExplainWidget
from _viewer import open_case

TIMEOUT_MS = 120_000


def test_cost_is_shown_beside_run_and_a_long_one_is_asked_first(make_napari_viewer, qtbot, tiny_case, tiny_card,
                                                                 monkeypatch):
    viewer = make_napari_viewer()
    open_case(viewer, tiny_case)
    widget = ExplainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Explain")
    widget.set_model_card(tiny_card)
    widget.method.setCurrentText("occlusion")
    before = {layer.name for layer in viewer.layers}
    asked = []
    monkeypatch.setattr(cost_gate, "ask", lambda parent, cost: asked.append(cost) or False)

    # short: no question, the estimate beside Run, the maps added; the record keeps the estimate
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert asked == [] and widget.cost.text().startswith("≈") and "forward" in widget.cost.toolTip()
    assert widget.last.result.cost is not None
    assert {layer.name for layer in viewer.layers} - before
    shown = [id(layer) for layer in viewer.layers]

    # over the limit: asked; declined means nothing is computed or added
    widget.gate.confirm_over_s = 0.0
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(asked) == 1 and asked[0].seconds > 0
    assert [id(layer) for layer in viewer.layers] == shown   # no layer added or replaced
    assert widget.status.text() == "Cancelled."

    # accepted: it runs
    monkeypatch.setattr(cost_gate, "ask", lambda parent, cost: asked.append(cost) or True)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert len(asked) == 2 and [id(layer) for layer in viewer.layers] != shown
