"""The bad-input corpus through ``segxai segment``: one clear sentence each, no input changed, nothing left behind."""

from __future__ import annotations

import re

import pytest

import _bad_inputs as corpus
from napari_segxai.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    entries = corpus.build(root)
    yield root, entries
    corpus.cleanup(root)


def one_sentence(message: str) -> bool:
    """One line, starting with a capital or a path, ending with a full stop, no traceback or repr noise."""
    return ("\n" not in message.strip() and message.strip().endswith(".") and "Traceback" not in message
            and not re.search(r"<[a-zA-Z_.]+ object at 0x", message))


def test_the_corpus_is_large_enough(bad):
    _, entries = bad
    assert len(entries) >= 40
    assert len({e.name for e in entries}) == len(entries)


def test_every_bad_input_gets_one_clear_sentence_and_loses_nothing(bad, capsys):
    root, entries = bad
    before = corpus.fingerprints(root)

    def run_one(entry):
        status = main(["segment", str(entry.case), "--model", str(entry.card), "--out", str(entry.out)])
        err = capsys.readouterr().err
        prefix = "segxai segment: error: "
        # the terminal progress bar may come first: the error is what follows the prefix
        message = err.split(prefix, 1)[1] if prefix in err else err
        clear = status == 2 and prefix in err and one_sentence(message)
        return clear and entry.says.lower() in message.lower(), message.strip()

    rows = corpus.run_all(entries, run_one)
    changed = sorted(k for k, v in corpus.fingerprints(root).items() if before.get(k) != v)
    changed += sorted(set(before) - set(corpus.fingerprints(root)))
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
