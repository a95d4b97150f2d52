"""The suite cannot go quiet: in CI a skipped widget test fails, and no display stops the run with a sentence."""

from __future__ import annotations

from pathlib import Path

QT_CONFTEST = Path(__file__).parent / "_qt" / "conftest.py"
SKIPPING_TEST = """
import pytest

def test_widget(qtbot):
    pytest.skip("simulated: something this test needs is missing")
"""


def _run(pytester, monkeypatch, *, ci: bool, display: bool):
    pytester.makeconftest(QT_CONFTEST.read_text())
    pytester.makepyfile(test_widget=SKIPPING_TEST)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "CI"):
        monkeypatch.delenv(name, raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    if display:
        monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # counts as a display for the guard; the test never builds Qt
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_in_ci_a_skipped_widget_test_fails(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, ci=True, display=True)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CI=true and this widget test was skipped*"])


def test_outside_ci_a_skipped_widget_test_stays_skipped(pytester, monkeypatch):
    _run(pytester, monkeypatch, ci=False, display=True).assert_outcomes(skipped=1)


def test_in_ci_without_a_display_the_run_stops_with_a_sentence(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, ci=True, display=False)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*CI=true but there is no display, so 1 widget tests cannot run*"])
