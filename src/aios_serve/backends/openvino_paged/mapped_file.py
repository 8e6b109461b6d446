"""Pages of a mapped file that this process no longer reads, given back.

The CPU plugin maps the IR's weights file and, on a MatMul's first run, copies the weights into
a layout of its own; from then on it reads the copy (and the embedding's Gather a few rows of
the file). The file's pages it read stay in the process's RSS: on Qwen2.5-Coder-1.5B about
1 GiB, untouched by any later step. On Linux, madvise(MADV_DONTNEED) takes them out of this
process; a later read of the unchanged file maps them in again from the page cache, so nothing
can be lost. Elsewhere (no /proc/self/maps) every function here does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

from aios_serve.native_memory import linux_libc

MADV_DONTNEED = 4
"""Linux's advice number: drop the range's pages from this process."""


def _mapped_lines(path: Path, table: str) -> Iterator[tuple[int, int, list[str]]]:
    """Per mapping of `path` in /proc/self/`table` (maps or smaps): start, end, and the lines
    that follow its header (smaps' fields)."""
    wanted = str(path.resolve())
    try:
        text = Path(f"/proc/self/{table}").read_text()
    except OSError:
        return
    current: tuple[int, int] | None = None
    fields: list[str] = []
    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's header
            if current is not None:
                yield (*current, fields)
            start, end = (int(address, 16) for address in head[0].split("-"))
            current = (start, end) if len(head) == 6 and head[5] == wanted else None
            fields = []
        elif current is not None:
            fields.append(line)
    if current is not None:
        yield (*current, fields)


def resident_bytes(path: Path) -> int:
    """How much of `path` this process's mappings hold in memory (their Rss)."""
    total = 0
    for _, _, fields in _mapped_lines(path, "smaps"):
        for line in fields:
            if line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    """libc's madvise(address, length, advice) on Linux; None elsewhere."""
    libc = linux_libc()
    if libc is None:
        return None
    function = libc.madvise
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int], int], function)


def release(path: Path) -> int:
    """Drop `path`'s pages from this process's mappings; the bytes of mapping advised."""
    madvise = _madvise()
    if madvise is None:
        return 0
    advised = 0
    for start, end, _ in _mapped_lines(path, "maps"):
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            advised += end - start
    return advised


@contextlib.contextmanager
def releasing(path: Path, every_s: float = 0.05) -> Iterator[None]:
    """Release `path`'s pages every `every_s` seconds while the block runs, and once after it:
    what is read once (weights being copied) then never holds the whole file at a time."""
    done = threading.Event()

    def keep_releasing() -> None:
        while not done.wait(every_s):
            release(path)

    thread = threading.Thread(target=keep_releasing, name="release-mapped-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release(path)
