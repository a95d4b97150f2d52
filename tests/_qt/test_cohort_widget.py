"""The Cohort dock widget in a real napari viewer under Xvfb: the ranking of a cohort folder, sorting, double-click opens a case."""

from __future__ import annotations

import json

import pytest
from qtpy.QtCore import Qt

from conftest import write_tiny_case
from napari_segxai._qt import cohort_widget
from napari_segxai._qt.cohort_widget import CohortWidget
from napari_segxai.core.cohort import CohortCase, analyse_cohort
from napari_segxai.core.cohort.runner import DONE

ODD = "case_3"


def _record(name, source, odd):
    """A finished case's record (as a worker writes it) whose edema relevance is typical, or not."""
    shares = {"edema": 0.1, "brain outside tumour": 0.2, "background": 0.7} if odd else \
        {"edema": 0.7 + 0.01 * int(name[-1]), "brain outside tumour": 0.2, "background": 0.1 - 0.01 * int(name[-1])}
    rows = [{"class": "edema", "kind": "region", "name": n, "importance": v, "positive": v, "negative": 0.0, "voxels": 10}
            for n, v in shares.items()]
    return {"case": name, "source": str(source), "status": "done", "roi": rows,
            "dice": {"edema": 0.2 if odd else 0.8 + 0.01 * int(name[-1])}}


@pytest.fixture
def cohort_out(tmp_path):
    """A cohort output folder of six tiny cases (case_3 odd), analysed as segxai cohort does."""
    out = tmp_path / "out"
    cases = []
    for i in range(6):
        name = f"case_{i}"
        folder = write_tiny_case(tmp_path / "cases" / name, seed=i)
        (out / "cases" / name).mkdir(parents=True)
        (out / "cases" / name / DONE).write_text(json.dumps(_record(name, folder, name == ODD)))
        cases.append(CohortCase(name, folder))
    analyse_cohort(out, cases, contamination=0.2)
    return out


@pytest.fixture
def messages(monkeypatch):
    """Notifications the widget sends, by kind."""
    seen = {"error": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(cohort_widget, f"show_{kind}", seen[kind].append)
    return seen


def _column(widget, c):
    return [widget.table.item(r, c).data(Qt.ItemDataRole.DisplayRole) for r in range(widget.table.rowCount())]


def test_ranking_sorting_and_double_click_opens_the_case(make_napari_viewer, cohort_out, messages):
    viewer = make_napari_viewer(show=True)
    widget = CohortWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cohort")
    assert widget.load(cohort_out)
    assert [widget.class_box.itemText(i) for i in range(widget.class_box.count())] == ["edema"]
    assert _column(widget, 1)[0] == ODD and _column(widget, 0) == list(range(1, 7))
    scores = _column(widget, 2)
    assert scores == sorted(scores, reverse=True)
    assert _column(widget, 3)[0] == "yes" and _column(widget, 4)[0] == 0.2
    assert "6 of 6 cases finished" in widget.summary_label.text() and "Spearman" in widget.summary_label.text()

    widget.table.sortItems(4, Qt.SortOrder.DescendingOrder)  # by Dice: case_5 (0.85) first
    assert _column(widget, 1)[0] == "case_5"
    widget.open_row(0)
    opened = [layer.metadata.get("segxai_case") for layer in viewer.layers]
    assert opened == ["case_5"] * 5  # four modalities and the reference label
    widget.table.sortItems(0, Qt.SortOrder.AscendingOrder)
    widget.open_row(0)
    assert [layer.metadata.get("segxai_case") for layer in viewer.layers][5:] == [ODD] * 5
    assert messages["error"] == [] and len(messages["info"]) == 2
    widget.table.selectRow(0)
    widget.grab().save("/tmp/cohort_widget.png")  # the picture the user sees (looked at)


def test_a_wrong_folder_or_moved_case_is_one_sentence(make_napari_viewer, cohort_out, tmp_path, messages):
    import shutil

    viewer = make_napari_viewer()
    widget = CohortWidget(viewer)
    assert not widget.load(tmp_path / "nowhere")
    assert len(messages["error"]) == 1 and "segxai cohort" in messages["error"][0]
    assert widget.load(cohort_out)
    shutil.rmtree(tmp_path / "cases" / ODD)
    widget.open_row(0)
    assert "moved" in messages["error"][-1] and len(viewer.layers) == 0
