"""The server's native memory settings: what it sets in its own process, and what the environment keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aios_serve.config import ServerConfig
from aios_serve.native_memory import KERNEL_CACHE_VARIABLES, MemoryConfig

APPLY = """
import json
from aios_serve.native_memory import MemoryConfig, apply_native_memory
print(json.dumps(apply_native_memory(MemoryConfig(**json.loads({config!r})))))
"""


def applied_in_child(config: dict[str, int], env: dict[str, str]) -> dict[str, str]:
    """apply_native_memory's answer in a fresh interpreter (it changes the process it runs in)."""
    clean = {k: v for k, v in os.environ.items() if k not in (*KERNEL_CACHE_VARIABLES, "MALLOC_ARENA_MAX")}
    clean.pop("MALLOC_MMAP_THRESHOLD_", None)
    script = APPLY.format(config=json.dumps(config))
    output = subprocess.run(
        [sys.executable, "-c", script], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(output))


GLIBC = sys.platform.startswith("linux") and os.path.exists("/lib/x86_64-linux-gnu/libc.so.6")


def test_defaults_bound_the_kernel_caches_and_trim_the_heap() -> None:
    assert ServerConfig.model_fields["memory"].default_factory is MemoryConfig
    applied = applied_in_child({}, {})
    assert applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"
    assert applied["LRU_CACHE_CAPACITY"] == "64"
    assert "MALLOC_MMAP_THRESHOLD_" not in applied  # glibc's sliding threshold is kept
    if GLIBC:
        assert applied["MALLOC_ARENA_MAX"] == "2"  # mallopt answered 1
        assert applied["malloc_trim"] == "every 5 s"


def test_config_values_are_applied() -> None:
    config = {
        "kernel_cache_capacity": 8,
        "malloc_mmap_threshold_bytes": 131072,
        "malloc_trim_interval_seconds": 0,
    }
    applied = applied_in_child(config, {})
    assert applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert "malloc_trim" not in applied
    if GLIBC:
        assert applied["MALLOC_MMAP_THRESHOLD_"] == "131072"


TRIM_RETURNS_FREED_PAGES = """
import ctypes, time
from pathlib import Path
from aios_serve.native_memory import MemoryConfig, apply_native_memory

def rss_mib():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(64 * 1024) for _ in range(4096)]  # 256 MiB below the mmap threshold
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)
for block in blocks[:-1]:  # the last one pins the heap's top, so only a trim can return the rest
    libc.free(block)
before = rss_mib()
apply_native_memory(MemoryConfig(malloc_trim_interval_seconds=0.2))
time.sleep(1.0)
print(before, rss_mib())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_trim_thread_returns_freed_heap_pages() -> None:
    output = subprocess.run(
        [sys.executable, "-c", TRIM_RETURNS_FREED_PAGES], capture_output=True, text=True, check=True
    ).stdout
    before, after = map(float, output.split())
    assert before - after > 200, (before, after)  # of the 256 MiB freed but kept by the heap


def test_the_environment_wins() -> None:
    applied = applied_in_child({}, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "512", "MALLOC_ARENA_MAX": "4"})
    assert applied["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512 (environment)"
    assert applied["LRU_CACHE_CAPACITY"] == "64"
    if "MALLOC_ARENA_MAX" in applied:
        assert applied["MALLOC_ARENA_MAX"] == "4 (environment)"


def test_negative_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        MemoryConfig(kernel_cache_capacity=-1)
