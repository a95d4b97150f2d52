"""Atomic file writes: a temporary name beside the target, renamed into place on success."""

from __future__ import annotations

import hashlib
import json
import os
import time
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    The temporary file gets the permissions a plain ``open()`` would give (mkstemp's are
    owner-only); on any error it is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


#: A file whose status changed less than this long ago is hashed every time (a rewrite within one
#: timestamp tick would leave its size, mtime and ctime unchanged; the same rule as git's "racy" files).
SETTLED_NS = 2_000_000_000


def file_digest(path: Path, _memo: dict = {}) -> str:  # noqa: B006 (a deliberate per-process memo)
    """SHA-256 of a file's bytes, remembered per (device, inode, size, mtime, ctime) once the file has settled."""
    stat = os.stat(path)
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key in _memo:
        return _memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if time.time_ns() - stat.st_ctime_ns > SETTLED_NS:
        _memo[key] = digest.hexdigest()
    return digest.hexdigest()


def read_json_object(path: Path, *, what: str = "its fields") -> dict:
    """The JSON object in ``path``; a ValueError with one sentence when it is not valid JSON or not an object."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or copy the file again.") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object with {what}.")
    return raw
