"""The "Report" dock widget: one click writes the case report in the background; mistakes are notifications."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from _viewer import open_case
from napari_segxai._qt.report_widget import ReportWidget

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _influence import blob_case, toy_model  # noqa: E402


@pytest.fixture
def toy(tmp_path, monkeypatch):
    from napari_segxai.core.io.nifti import save_nifti

    monkeypatch.setenv("SEGXAI_TRAINING_CASES", str(tmp_path / "cases"))
    card = toy_model(tmp_path / "toy")
    case = blob_case()
    folder = tmp_path / "blobs"
    for modality, channel in zip(case.modalities, case.channels):
        save_nifti(channel, case.affine, folder / f"blobs_{modality}.nii.gz")
    return card, folder


def test_write_report_button_writes_the_page_and_refuses_a_second_job(make_napari_viewer, qtbot, notices, toy, tmp_path):
    card, folder = toy
    viewer = make_napari_viewer(show=True)
    open_case(viewer, folder)
    widget = ReportWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Report")
    widget.set_model_card(card)
    widget.method.setCurrentText("saliency")
    widget.folder.setText(str(tmp_path / "reports"))
    assert widget.run_button.text() == "Write report"

    widget.run_button.click()
    widget.run_button.click()  # a second job while one runs is refused, never started
    assert any("already running" in m for m in notices["warning"])
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert notices["error"] == []
    out = tmp_path / "reports" / "blobs"
    assert widget.last_written["html"] == out / "report.html"
    assert (out / "report.html").stat().st_size > 10_000 and (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "influence.csv").is_file()  # the toy model has a training record
    assert any(str(out / "report.html") in m for m in notices["info"])
    assert "Report written" in widget.status.text()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "saliency" in page and "<h2>Training evidence (TracIn)</h2>" in page


def test_report_mistakes_are_one_notification_each(make_napari_viewer, notices, toy, tmp_path):
    card, folder = toy
    viewer = make_napari_viewer()
    widget = ReportWidget(viewer)
    widget.set_model_card(card)
    widget.run()  # no case layers yet
    open_case(viewer, folder)
    widget.trust_dir.setText(str(tmp_path / "nowhere"))
    widget.run()
    widget.trust_dir.setText("")
    widget.folder.setText("")
    widget.run()
    assert len(notices["error"]) == 3 and not widget.running
    assert "does not exist" in notices["error"][1] and "No report folder" in notices["error"][2]
