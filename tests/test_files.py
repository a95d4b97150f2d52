"""Atomic writes leave either the old file or the new one, never a temporary, with normal permissions."""

import os
import stat

import pytest

from napari_segxai.core.io.files import atomic_path, write_text


def test_write_text_replaces_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "record.json"
    write_text(target, "first")
    write_text(target, "second")
    assert target.read_text() == "second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half written")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
