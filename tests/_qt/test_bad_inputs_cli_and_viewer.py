"""The bad-input corpus through ``segxai segment`` and through a napari viewer, in one test with one tally.

In the viewer each entry goes the way a user takes it: open the case with the SegXAI reader (what
napari's reader dialog does once SegXAI is chosen), run the Segment widget with the entry's model
card, and for the output entries save the segmentation where the CLI was told to write. Every entry
must end in a notification (or napari's own refusal) holding one clear sentence, with no uncaught
exception, no input file changed, no partial output and a widget that still segments afterwards.
"""

from __future__ import annotations

import pytest
from napari.utils.notifications import notification_manager

import _bad_inputs as corpus
from napari_segxai import _reader, _writer
from napari_segxai._qt.segment_widget import SegmentWidget

TIMEOUT_MS = 60_000


@pytest.fixture
def bad(tmp_path):
    root = tmp_path / "bad_inputs"
    entries = corpus.build(root)
    yield root, entries
    corpus.cleanup(root)


def _segmentations(viewer) -> list:
    return [layer for layer in viewer.layers if (layer.metadata or {}).get("segxai_role") == "segmentation"]


def _clear(message: str, says: str) -> bool:
    return corpus.one_sentence(message) and says.lower() in message.lower()


def test_every_bad_input_is_refused_clearly_by_the_cli_and_by_the_viewer(
    bad, make_napari_viewer, qtbot, notices, monkeypatch
):
    root, entries = bad
    before = corpus.fingerprints(root)
    for module in (_reader, _writer):
        monkeypatch.setattr(module, "show_error", notices["error"].append)
    unhandled: list = []  # worker errors and other exceptions napari would show with a traceback
    monkeypatch.setattr(notification_manager, "receive_error", lambda *exc_info: unhandled.append(exc_info[1]))

    cli_rows = corpus.run_all(entries, corpus.through_the_cli)

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    napari_said: list[str] = []  # entries refused with napari's own message (the SegXAI reader was not asked)

    def in_the_viewer(entry: corpus.BadInput) -> tuple[bool, str]:
        viewer.layers.clear()
        seen = len(notices["error"])
        try:
            viewer.open(str(entry.case), plugin="napari-segxai")
        except (ValueError, FileNotFoundError) as refused:  # napari's: "... refused the file", "... does not exist"
            ours = notices["error"][seen:]
            if not ours:
                napari_said.append(entry.name)
                return corpus.one_sentence(str(refused)) and str(entry.case) in str(refused), str(refused)
            return len(ours) == 1 and _clear(ours[0], entry.says), ours[0]
        widget.set_model_card(entry.card)
        widget.run_button.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
        errors = notices["error"][seen:]
        if entry.save_as is None:
            clear = len(errors) == 1 and _clear(errors[0], entry.says) and not _segmentations(viewer)
            return clear, errors[0] if errors else f"no error; status: {widget.status.text()}"
        # An output entry: segmenting works; saving the result where the CLI was told to write is refused
        # (File > Save Selected Layers: nothing written, the writer says why, napari adds "save failed").
        (segmentation,) = _segmentations(viewer)
        viewer.layers.selection = {segmentation}
        with pytest.warns(UserWarning, match="did not return any written paths"):
            saved = viewer.layers.save(str(entry.save_as), selected=True, plugin="napari-segxai")
        said = notices["error"][seen:]
        return saved == [] and len(said) == 1 and _clear(said[0], entry.save_says), said[0] if said else ""

    with qtbot.capture_exceptions() as caught:
        viewer_rows = []
        for entry in entries:
            crashes_before = len(unhandled) + len(caught)
            (row,) = corpus.run_all([entry], in_the_viewer)
            if len(unhandled) + len(caught) > crashes_before:
                errors = [*unhandled, *(exc for _, exc, _ in caught)][crashes_before:]
                row = (entry, False, row[2], f"uncaught: {errors[0]!r}")
            viewer_rows.append(row)
            assert not widget.running and widget.run_button.isEnabled()

        # Still usable: the good case with the good card segments without a word of error.
        viewer.layers.clear()
        good_case, good_card = entries[-1].case, entries[-1].card
        seen = len(notices["error"])
        viewer.open(str(good_case), plugin="napari-segxai")
        widget.set_model_card(good_card)
        widget.run_button.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
        assert notices["error"][seen:] == [] and len(_segmentations(viewer)) == 1
    caught = list(caught)

    rows = cli_rows + viewer_rows
    changed = corpus.changed_inputs(root, before)
    left = corpus.leftovers(root)
    crashes = [r for r in rows if r[3] is not None]
    clear = sum(r[1] for r in rows)
    print(f"\nbad inputs tried: {len(entries)} through the CLI and {len(entries)} through the viewer, "
          f"clear errors: {clear} of {len(rows)} ({len(napari_said)} in napari's words), "
          f"crashes: {len(crashes)}, files changed: {len(changed)}, partial outputs: {len(left)}")
    for where, part in (("cli", cli_rows), ("viewer", viewer_rows)):
        for entry, ok, message, crash in part:
            print(f"  {'ok ' if ok else 'BAD'} {where:6} {entry.name}: {crash or message}")
    assert not (root / "PWNED").exists(), "the malicious pickle ran"
    assert crashes == [] and caught == [] and unhandled == []
    assert clear == len(rows), [(r[0].name, r[2]) for r in rows if not r[1]]
    assert changed == [] and left == []
