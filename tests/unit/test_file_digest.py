"""A file's sha256 is remembered across restarts only while the file's stat is unchanged: a write
that keeps the size and puts the modification time back is still read again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aios_serve.models import bundled
from aios_serve.models.bundled import file_sha256


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AIOS_CACHE_DIR", str(tmp_path / "cache"))
    bundled._sha256.cache_clear()
    return tmp_path / "cache" / "sha256"


def _restart() -> None:
    """What a new process starts from: nothing remembered in memory."""
    bundled._sha256.cache_clear()


def test_a_restart_takes_the_remembered_digest(tmp_path: Path, cache: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    assert file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
    (memo,) = cache.iterdir()
    entry = json.loads(memo.read_text())
    memo.write_text(json.dumps({**entry, "sha256": "f" * 64}))  # marks the memo as the source
    _restart()
    assert file_sha256(weights) == "f" * 64


def test_a_changed_file_is_read_again(tmp_path: Path, cache: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"a" * 4096)
    before = os.stat(weights)
    assert file_sha256(weights) == hashlib.sha256(b"a" * 4096).hexdigest()
    weights.write_bytes(b"b" * 4096)  # same size, modification time put back
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    _restart()
    assert file_sha256(weights) == hashlib.sha256(b"b" * 4096).hexdigest()


def test_memos_of_removed_files_are_dropped(tmp_path: Path, cache: Path) -> None:
    gone, kept, new = (tmp_path / f"{name}.gguf" for name in ("gone", "kept", "new"))
    for path in (gone, kept, new):
        path.write_bytes(path.name.encode())
    file_sha256(gone)
    file_sha256(kept)
    assert len(list(cache.iterdir())) == 2
    gone.unlink()
    (cache / "unreadable").write_text("{")
    file_sha256(new)
    remembered = {json.loads(memo.read_text())["path"] for memo in cache.iterdir()}
    assert remembered == {str(kept.resolve()), str(new.resolve())}


def test_an_unwritable_cache_still_gives_the_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("AIOS_CACHE_DIR", str(blocker))
    _restart()
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"weights")
    assert file_sha256(weights) == hashlib.sha256(b"weights").hexdigest()
