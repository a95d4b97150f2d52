"""The bad-input corpus through ``segxai segment``: one clear sentence each, no input changed, nothing left behind."""

from __future__ import annotations

import pytest

import _bad_inputs as corpus


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    entries = corpus.build(root)
    yield root, entries
    corpus.cleanup(root)


CORPUS_SIZE = 47  # every entry of _bad_inputs.build; a dropped or added entry must change this on purpose


def test_the_corpus_holds_every_entry(bad):
    _, entries = bad
    assert len(entries) == CORPUS_SIZE
    assert len({e.name for e in entries}) == len(entries)


def test_every_bad_input_gets_one_clear_sentence_and_loses_nothing(bad):
    root, entries = bad
    before = corpus.fingerprints(root)

    rows = corpus.run_all(entries, corpus.through_the_cli)
    changed = corpus.changed_inputs(root, before)
    left = corpus.leftovers(root)
    crashes = [r for r in rows if r[3] is not None]
    unclear = [r for r in rows if r[3] is None and not r[1]]
    print(f"\nbad inputs tried: {len(rows)}, clear errors: {sum(r[1] for r in rows)}, "
          f"crashes: {len(crashes)}, unclear: {len(unclear)}, files changed: {len(changed)}, "
          f"partial outputs: {len(left)}")
    for entry, clear, message, crash in rows:
        print(f"  {'ok ' if clear else 'BAD'} {entry.name}: {crash or message}")
    assert not (root / "PWNED").exists(), "the malicious pickle ran"
    assert not crashes, [(r[0].name, r[3]) for r in crashes]
    assert not unclear, [(r[0].name, r[2]) for r in unclear]
    assert changed == []
    assert left == []
